"""What a parser gives back when it has more to say than sections and a title."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rag.records import Section


@dataclass
class Parsed:
    sections: list[Section]
    title: str | None = None
    # Metadata of the document besides what every one has: an e-mail's from/to/date, OCR'd pages.
    metadata: dict[str, Any] = field(default_factory=dict)
    # (file name, bytes) of the files it carries, each read as a document of its own.
    attachments: list[tuple[str, bytes]] = field(default_factory=list)
    # Seconds OCR took on it, for the run's report.
    ocr_seconds: float = 0.0
