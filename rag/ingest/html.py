"""HTML: visible text only (no scripts, styles or navigation), sectioned by h1-h6."""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, NavigableString

from rag.ingest.text import SectionBuilder, decode_text
from rag.records import Section

_DROP = ["script", "style", "noscript", "template", "nav", "header", "footer", "aside",
         "form", "svg", "iframe", "button", "select", "head"]
_BLOCK = {"p", "div", "section", "article", "main", "li", "ul", "ol", "table", "tr", "pre",
          "blockquote", "dd", "dt", "dl", "figure", "figcaption", "address", "hr", "br"}
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_MARK = "\x1e"  # record separator: cannot occur in decoded visible text


def parse_html(data: bytes) -> tuple[list[Section], str | None]:
    soup = BeautifulSoup(decode_text(data), "lxml")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else None
    for tag in soup.find_all(_DROP):
        tag.decompose()
    for tag in soup.find_all(attrs={"role": re.compile(r"^(navigation|banner|contentinfo|search)$")}):
        tag.decompose()
    for tag in soup.find_all(attrs={"aria-hidden": "true"}):
        tag.decompose()

    # Mark headings and block boundaries in the text itself, then read it out in one pass.
    for tag in soup.find_all(list(_HEADINGS)):
        level = _HEADINGS[tag.name]
        heading = " ".join(tag.get_text(" ", strip=True).split())
        tag.replace_with(NavigableString(f"\n{_MARK}{level}{_MARK}{heading}{_MARK}\n"))
    for tag in soup.find_all(["td", "th"]):
        tag.append(NavigableString(" | "))
    for tag in soup.find_all(_BLOCK):
        if tag.name in ("li", "tr", "br"):
            tag.append(NavigableString("\n"))
        else:
            tag.insert_before(NavigableString("\n\n"))
            tag.append(NavigableString("\n\n"))

    root = soup.body or soup
    raw = root.get_text("")
    parts = raw.split(_MARK)
    builder = SectionBuilder()
    builder.add(_clean(parts[0]))
    # After the first part, parts come in triples: level, heading, the text that follows.
    for i in range(1, len(parts) - 2, 3):
        builder.heading(int(parts[i]), parts[i + 1].strip())
        builder.add(_clean(parts[i + 2]))
    return builder.finish(), title or builder.first_heading


def _clean(body: str) -> str:
    """Table cells end in " | "; drop the one before each line end."""
    return re.sub(r"[ \t]*\|[ \t]*\n", "\n", body + "\n")
