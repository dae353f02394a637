"""HTML: visible text only (no scripts, styles or navigation), sectioned by h1-h6.

One pass over lxml's parse events, no tree: time and memory must grow linearly with the page
however deeply it nests (an upload is parsed on the service's only upload thread, and a walk that
revisits nested tags per tag takes an hour for 2 MB of nested <div>s). lxml's tree cannot do it:
it builds at most 255 levels and silently drops everything after the first deeper tag. Nesting
past ingest.max_nesting_depth is refused, since libxml2 scans every open element for each end
tag that closes nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from lxml import etree

from rag.config import IngestSettings
from rag.errors import IngestError
from rag.ingest.text import SectionBuilder, decode_text
from rag.records import Section

_DROP = {"script", "style", "noscript", "template", "nav", "header", "footer", "aside",
         "form", "svg", "iframe", "button", "select", "head"}
_DROP_ROLES = re.compile(r"^(navigation|banner|contentinfo|search)$")
_BLOCK = {"p", "div", "section", "article", "main", "li", "ul", "ol", "table", "tr", "pre",
          "blockquote", "dd", "dt", "dl", "figure", "figcaption", "address", "hr", "br"}
_LINE_END = {"li", "tr", "br"}  # end with a line break; other blocks are paragraphs
_CELLS = {"td", "th"}
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
# Text inside these is not page text (ruby annotations, code).
_NOT_TEXT = {"rt", "rp", "style", "script", "template"}
_KEEP_SPACES = {"pre", "textarea"}
_ASCII_SPACES = " \n\t\f\r"
# A cell's " | " before a line end. The lookbehind starts a match only where a run of blanks starts:
# without it each position of a long run rescans the rest of the run, quadratic in its length.
_CELL_END = re.compile(r"(?<![ \t])[ \t]*\|[ \t]*\n")


@dataclass
class _Open:
    """An element whose end tag has not come yet, and what its start changed."""

    name: str
    dropped: bool = False
    heading: bool = False
    body: bool = False
    title: bool = False


class _Text:
    """The page's text in order, cut into sections at headings as they come (memory: the sections)."""

    def __init__(self) -> None:
        self.builder = SectionBuilder()
        self._parts: list[str] = []
        self._joined: list[str] = []  # parts joined 4,096 at a time: a str is smaller than its pieces

    def add(self, text: str) -> None:
        self._parts.append(text)
        if len(self._parts) >= 4096:
            self._joined.append("".join(self._parts))
            self._parts.clear()

    def heading(self, level: int, text: str) -> None:
        self.add("\n")
        self._flush()
        self.builder.heading(level, text)
        self.add("\n")

    def finish(self) -> list[Section]:
        self._flush()
        return self.builder.finish()

    def _flush(self) -> None:
        self.builder.add(_clean("".join(self._joined) + "".join(self._parts)))
        self._joined.clear()
        self._parts.clear()


class _Target:
    """lxml parser target: turns start, end and text events into sections and a title."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.title: list[str] | None = None  # the first <title>'s strings
        self.body_seen = False
        self.in_body, self.outside = _Text(), _Text()  # the text is the body's if there is one
        self._stack: list[_Open] = []
        self._open: Counter[str] = Counter()
        self._text: list[str] = []
        self._dropped = self._in_body = self._not_text = self._keep_spaces = 0
        self._in_title = False
        self._heading: tuple[int, list[str]] | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self._flush()
        if len(self._stack) >= self.max_depth:
            raise IngestError(
                f"HTML elements nested over {self.max_depth} deep, past ingest.max_nesting_depth: unclosed tags, or "
                f"a page made to stall parsers (browsers stop nesting at 512). If the page is genuine, raise "
                f"ingest.max_nesting_depth (RAG_INGEST_MAX_NESTING_DEPTH)")
        frame = _Open(tag)
        if tag == "title" and self.title is None:
            frame.title, self._in_title, self.title = True, True, []
        if self._dropped or tag in _DROP or attrib and (
                attrib.get("aria-hidden") == "true" or _DROP_ROLES.search(attrib.get("role") or "")):
            frame.dropped = True
            self._dropped += 1
        elif tag == "body" and not self.body_seen:
            frame.body, self.body_seen = True, True
            self._in_body += 1
        elif self._heading is None and tag in _HEADINGS:
            frame.heading = True
            self._heading = (_HEADINGS[tag], [])
        elif self._heading is None and tag in _BLOCK and tag not in _LINE_END:
            self._emit("\n\n")
        self._not_text += tag in _NOT_TEXT
        self._keep_spaces += tag in _KEEP_SPACES
        self._stack.append(frame)
        self._open[tag] += 1

    def end(self, tag: str) -> None:
        self._flush()
        if not self._open[tag]:
            return  # an end tag that closes nothing
        while self._stack:  # close every element opened after the one this ends
            if self._close(self._stack.pop()) == tag:
                break

    def data(self, text: str) -> None:
        self._text.append(text)

    def comment(self, text: str) -> None:
        self._flush()

    def pi(self, target: str, data: str) -> None:
        self._flush()

    def doctype(self, name: str, pubid: str, system: str) -> None:
        self._flush()

    def close(self) -> None:
        self._flush()
        while self._stack:
            self._close(self._stack.pop())

    def _close(self, frame: _Open) -> str:
        name = frame.name
        self._open[name] -= 1
        self._not_text -= name in _NOT_TEXT
        self._keep_spaces -= name in _KEEP_SPACES
        if frame.title:
            self._in_title = False
        if frame.dropped:
            self._dropped -= 1
        elif frame.heading and self._heading is not None:
            level, words = self._heading
            self._heading = None
            (self.in_body if self._in_body else self.outside).heading(level, " ".join(" ".join(words).split()))
        elif self._heading is None:
            if name in _CELLS:
                self._emit(" | ")
            if name in _LINE_END:
                self._emit("\n")
            elif name in _BLOCK:
                self._emit("\n\n")
        if frame.body:
            self._in_body -= 1
        return name

    def _flush(self) -> None:
        """One string per run of text between tags, as BeautifulSoup made them."""
        if not self._text:
            return
        text = "".join(self._text)
        self._text.clear()
        if not self._keep_spaces and not text.strip(_ASCII_SPACES):
            text = "\n" if "\n" in text else " "
        if self._not_text:
            return
        if self._in_title and self.title is not None:
            self.title.append(text)
        if self._dropped:
            return
        if self._heading is not None:
            self._heading[1].append(text)
        else:
            self._emit(text)

    def _emit(self, text: str) -> None:
        if not self._dropped:
            (self.in_body if self._in_body else self.outside).add(text)


def _parse_events(text: str, max_depth: int) -> _Target:
    if text.startswith("\ufeff"):
        text = text[1:]
    errors: list[str] = []
    for markup, encoding in ((text, None), (text.encode("utf-8"), "utf-8")):
        target = _Target(max_depth)
        parser = etree.HTMLParser(target=target, recover=True, encoding=encoding)
        try:
            parser.feed(markup)
            parser.close()
            return target
        except (UnicodeDecodeError, LookupError, etree.ParserError) as exc:
            errors.append(str(exc))
    raise IngestError(f"not readable as HTML: {errors[-1]}")


def parse_html(data: bytes, settings: IngestSettings) -> tuple[list[Section], str | None]:
    target = _parse_events(decode_text(data), settings.max_nesting_depth)
    title = " ".join(s.strip() for s in target.title if s.strip()) if target.title is not None else None
    text = target.in_body if target.body_seen else target.outside
    sections = text.finish()
    return sections, title or text.builder.first_heading


def _clean(body: str) -> str:
    """Table cells end in " | "; drop the one before each line end."""
    return _CELL_END.sub("\n", body + "\n")
