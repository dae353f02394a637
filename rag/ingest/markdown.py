"""Markdown: sections by ATX/setext headings, keeping paragraphs and code blocks intact."""

from __future__ import annotations

import re

from rag.ingest.text import decode_text, normalize_whitespace
from rag.records import Section

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)


def _clean_heading(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: keep the words
    return re.sub(r"[*_`]+", "", text).strip()


def parse_markdown(data: bytes) -> tuple[list[Section], str | None]:
    """Sections in reading order and the first top-level heading as title."""
    text = _FRONT_MATTER.sub("", decode_text(data).replace("\r\n", "\n"))
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []
    title: str | None = None
    in_fence: str | None = None

    def flush() -> None:
        body = normalize_whitespace("\n".join(buf))
        if body:
            sections.append(Section(text=body, headings=tuple(h for _, h in stack)))
        buf.clear()

    def open_heading(level: int, heading: str) -> None:
        nonlocal title
        flush()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        if title is None and heading:
            title = heading

    for line in text.split("\n"):
        fence = _FENCE.match(line)
        if in_fence:
            buf.append(line)
            if fence and fence.group(1) == in_fence:
                in_fence = None
            continue
        if fence:
            in_fence = fence.group(1)
            buf.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            open_heading(len(atx.group(1)), _clean_heading(atx.group(2)))
            continue
        setext = _SETEXT.match(line)
        if setext and buf and buf[-1].strip():
            heading = _clean_heading(buf.pop())
            open_heading(1 if setext.group(1).startswith("=") else 2, heading)
            continue
        buf.append(line)
    flush()
    return sections, title
