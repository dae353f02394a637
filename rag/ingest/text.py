"""Bytes to text: UTF-8 first, charset-normalizer for anything else, binary refused."""

from __future__ import annotations

import re

from charset_normalizer import from_bytes

from rag.errors import IngestError, SkipDocument
from rag.records import Section

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANKS = re.compile(r"[ \t\f\v]+")


def decode_text(data: bytes) -> str:
    """Decode a text file of unknown encoding, or say why it is not text."""
    if not data.strip():
        raise SkipDocument("empty file")
    if b"\x00" in data[:8192] and not data.startswith(_BOMS):
        raise IngestError("binary content (NUL bytes), not a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        matches = from_bytes(data)
        best = matches.best()
        if best is None:
            raise IngestError("binary content or unknown text encoding") from None
        # Short Western text fits several code pages equally well; the most common one wins ties.
        tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
        best = next((m for m in tied if m.encoding == "cp1252"), best)
        text = str(best)
    controls = len(_CONTROL.findall(text[:20000]))
    if controls > max(8, len(text[:20000]) // 100):
        raise IngestError("binary content (control characters), not a text file")
    return text


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces and blank lines; keep paragraph breaks, which the chunker uses."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    # One substitution over the text, not one per line: a page of 500,000 short lines spent 2 s here.
    lines = [line.strip() for line in _BLANKS.sub(" ", text).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class SectionBuilder:
    """Collects text under the current heading path; a heading closes the section before it."""

    def __init__(self, joiner: str = "\n") -> None:
        self.sections: list[Section] = []
        self.first_heading: str | None = None
        self._joiner = joiner
        self._stack: list[tuple[int, str]] = []
        self._buf: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        if text:
            self._stack.append((level, text))
            self.first_heading = self.first_heading or text

    def add(self, text: str) -> None:
        self._buf.append(text)

    def pop_last(self) -> str | None:
        return self._buf.pop() if self._buf else None

    def last(self) -> str | None:
        return self._buf[-1] if self._buf else None

    def flush(self) -> None:
        body = normalize_whitespace(self._joiner.join(self._buf))
        if body:
            self.sections.append(Section(text=body, headings=tuple(h for _, h in self._stack)))
        self._buf.clear()

    def finish(self) -> list[Section]:
        self.flush()
        return self.sections
