"""Markdown: sections by ATX/setext headings, keeping paragraphs and code blocks intact."""

from __future__ import annotations

import re

from rag.ingest.text import SectionBuilder, decode_text
from rag.records import Section

# An ATX heading's opening: its closing "#"s and blanks are cut off by rstrip in _atx_heading. The one
# regex that did both, (.*?)[ \t]*#*[ \t]*$, took 76 s on "# a" followed by 4,000 spaces and a letter.
_ATX = re.compile(r" {0,3}(#{1,6})[ \t]+")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _without_front_matter(text: str) -> str:
    """The text after a leading "---" block (YAML front matter); str.find, as a lazy regex took 0.7 s a MB."""
    end = text.find("\n---\n", 4) if text.startswith("---\n") else -1
    return text[end + 5:] if end >= 0 else text


def _atx_heading(line: str) -> tuple[int, str] | None:
    """Level and text of an ATX heading line ("## Text ##"), or None."""
    opening = _ATX.match(line)
    if opening is None:
        return None
    text = line[opening.end():].rstrip(" \t").rstrip("#").rstrip(" \t")
    return len(opening.group(1)), text


def _link_words(text: str) -> str:
    r"""Links and images as their words: what re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text) gives.

    The regex rescans to the next "]" and ")" from every "[", so a heading of many "[" took
    quadratic time; here each "[" before the same "]" shares one scan.
    """
    out: list[str] = []
    done = 0  # text[:done] is in out
    start = 0  # look for "[" from here
    while (open_ := text.find("[", start)) >= 0:
        close = text.find("]", open_ + 1)
        if close < 0:
            break
        if text.startswith("(", close + 1):
            end = text.find(")", close + 2)
            if end < 0:
                break  # no ")" after this "]", so none after any later one either
            begin = open_ - 1 if open_ > done and text[open_ - 1] == "!" else open_
            out += (text[done:begin], text[open_ + 1:close])
            done = start = end + 1
        else:
            start = close + 1  # every "[" before this "]" fails the same way
    out.append(text[done:])
    return "".join(out)


def _clean_heading(text: str) -> str:
    text = _link_words(text)  # links and images: keep the words
    return re.sub(r"[*_`]+", "", text).strip()


def parse_markdown(data: bytes) -> tuple[list[Section], str | None]:
    """Sections in reading order and the first heading as title."""
    text = _without_front_matter(decode_text(data).replace("\r\n", "\n"))
    builder = SectionBuilder("\n")
    in_fence: str | None = None
    for line in text.split("\n"):
        fence = _FENCE.match(line)
        if in_fence:
            builder.add(line)
            if fence and fence.group(1) == in_fence:
                in_fence = None
            continue
        if fence:
            in_fence = fence.group(1)
            builder.add(line)
            continue
        atx = _atx_heading(line)
        if atx:
            builder.heading(atx[0], _clean_heading(atx[1]))
            continue
        setext = _SETEXT.match(line)
        previous = builder.last()
        if setext and previous is not None and previous.strip():
            builder.pop_last()
            builder.heading(1 if setext.group(1).startswith("=") else 2, _clean_heading(previous))
            continue
        builder.add(line)
    return builder.finish(), builder.first_heading
