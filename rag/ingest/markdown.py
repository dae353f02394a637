"""Markdown: sections by ATX/setext headings, keeping paragraphs and code blocks intact."""

from __future__ import annotations

import re

from rag.ingest.text import SectionBuilder, decode_text
from rag.records import Section

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)


def _clean_heading(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: keep the words
    return re.sub(r"[*_`]+", "", text).strip()


def parse_markdown(data: bytes) -> tuple[list[Section], str | None]:
    """Sections in reading order and the first heading as title."""
    text = _FRONT_MATTER.sub("", decode_text(data).replace("\r\n", "\n"))
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
        atx = _ATX.match(line)
        if atx:
            builder.heading(len(atx.group(1)), _clean_heading(atx.group(2)))
            continue
        setext = _SETEXT.match(line)
        previous = builder.last()
        if setext and previous is not None and previous.strip():
            builder.pop_last()
            builder.heading(1 if setext.group(1).startswith("=") else 2, _clean_heading(previous))
            continue
        builder.add(line)
    return builder.finish(), builder.first_heading
