"""What an indexing run reports: counts, problems per file, seconds per stage, and progress as
it goes (the CLI draws a bar from it; the library's default ignores it)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str
    kind: Literal["skipped", "failed"]


@dataclass
class IndexReport:
    """What one `rag index` run did."""

    index: str = ""
    collection: str = ""
    version: str | None = None
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    # Of the unchanged documents, those whose access list changed: their rows rewritten, nothing
    # chunked or embedded again.
    acl_changed: int = 0
    deleted: int = 0
    # Added or updated documents whose content was already indexed under another id.
    deduplicated: int = 0
    chunks: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    # Documents a --sync found gone but did not delete, and why (empty when it deleted them).
    would_delete: int = 0
    sync_stopped: str = ""
    # Seconds spent per stage: load (the model), parse, chunk, embed, write; the rest is lookups.
    stages: dict[str, float] = field(default_factory=dict)
    # Pages (and images) read by OCR, and the seconds OCR took (summed over its threads).
    ocr_pages: int = 0
    ocr_seconds: float = 0.0

    @property
    def documents(self) -> int:
        """Documents embedded in this run (new or changed)."""
        return self.added + self.updated

    @property
    def skipped(self) -> int:
        return sum(p.kind == "skipped" for p in self.problems)

    @property
    def failed(self) -> int:
        return sum(p.kind == "failed" for p in self.problems)

    def exit_code(self, strict: bool = False) -> int:
        """0 when documents are indexed and nothing failed (nor, with strict, was skipped), and a
        --sync did what it was asked."""
        if self.failed or self.sync_stopped or (strict and self.skipped):
            return 1
        return 0 if (self.documents + self.unchanged + self.deleted) > 0 else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "collection": self.collection, "version": self.version,
            "documents": self.documents, "added": self.added, "updated": self.updated,
            "unchanged": self.unchanged, "acl_changed": self.acl_changed, "deleted": self.deleted,
            "deduplicated": self.deduplicated, "chunks": self.chunks,
            "skipped": self.skipped, "failed": self.failed, "seconds": round(self.seconds, 3),
            "would_delete": self.would_delete, "sync_stopped": self.sync_stopped or None,
            "stages": {stage: round(seconds, 3) for stage, seconds in self.stages.items()},
            "ocr": {"pages": self.ocr_pages, "seconds": round(self.ocr_seconds, 3)},
            "problems": [{"path": p.path, "reason": p.reason, "kind": p.kind} for p in self.problems],
        }

    def count_written(self, existed: bool) -> None:
        """One more document written: updated when an earlier version was there, else added."""
        if existed:
            self.updated += 1
        else:
            self.added += 1


class IndexProgress(Protocol):
    """Receives progress; the CLI draws a bar from it, the library default ignores it."""

    def start(self, total_bytes: int, files: int) -> None: ...

    def advance(self, nbytes: int, documents: int, chunks: int) -> None: ...

    def problem(self, problem: Problem) -> None: ...

    def ocr_page(self, seconds: float) -> None:
        """OCR read one more page (or image) in `seconds`; called from OCR's threads."""
        ...


class NoProgress:
    def start(self, total_bytes: int, files: int) -> None:
        pass

    def advance(self, nbytes: int, documents: int, chunks: int) -> None:
        pass

    def problem(self, problem: Problem) -> None:
        pass

    def ocr_page(self, seconds: float) -> None:
        pass


class SerializedProgress:
    """A progress receiver called from the indexing thread and the embedding thread, one at a time."""

    def __init__(self, progress: IndexProgress) -> None:
        self._progress = progress
        self._lock = threading.Lock()

    def start(self, total_bytes: int, files: int) -> None:
        with self._lock:
            self._progress.start(total_bytes, files)

    def advance(self, nbytes: int, documents: int, chunks: int) -> None:
        with self._lock:
            self._progress.advance(nbytes, documents, chunks)

    def problem(self, problem: Problem) -> None:
        with self._lock:
            self._progress.problem(problem)

    def ocr_page(self, seconds: float) -> None:
        receive = getattr(self._progress, "ocr_page", None)  # a receiver written before OCR lacks it
        if receive is not None:
            with self._lock:
                receive(seconds)
