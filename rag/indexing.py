"""Files in, index version out: discover, load, chunk, embed, write, commit.

A bad file costs one line in the report and nothing else: the batch goes on, and since
all changes land in one new version, nothing already indexed is touched by a failure.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from rag.chunk import Chunker
from rag.config import Settings
from rag.embed import Embedder
from rag.errors import RagError, SkipDocument
from rag.index.store import IndexStore
from rag.ingest import discover, load_source
from rag.records import Chunk, Document

log = logging.getLogger(__name__)

# Chunks embedded per call: large enough for length-sorted batches, small enough to bound memory.
EMBED_FLUSH_CHUNKS = 512


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str
    kind: Literal["skipped", "failed"]


@dataclass
class IndexReport:
    """What one `rag index` run did."""

    index: str = ""
    version: str | None = None
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

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
        """0 when documents are indexed and nothing failed (nor, with strict, was skipped)."""
        if self.failed or (strict and self.skipped):
            return 1
        return 0 if (self.documents + self.unchanged) > 0 else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "version": self.version,
            "documents": self.documents, "added": self.added, "updated": self.updated,
            "unchanged": self.unchanged, "chunks": self.chunks,
            "skipped": self.skipped, "failed": self.failed, "seconds": round(self.seconds, 3),
            "problems": [{"path": p.path, "reason": p.reason, "kind": p.kind} for p in self.problems],
        }


class IndexProgress(Protocol):
    """Receives progress; the CLI draws a bar from it, the library default ignores it."""

    def start(self, total_bytes: int, files: int) -> None: ...

    def advance(self, nbytes: int, documents: int, chunks: int) -> None: ...

    def problem(self, problem: Problem) -> None: ...


class _NoProgress:
    def start(self, total_bytes: int, files: int) -> None:
        pass

    def advance(self, nbytes: int, documents: int, chunks: int) -> None:
        pass

    def problem(self, problem: Problem) -> None:
        pass


def chunking_identity(settings: Settings, embedder: Embedder) -> dict[str, Any]:
    return {
        "chunk_size": settings.chunking.chunk_size,
        "chunk_overlap": settings.chunking.chunk_overlap,
        "heading_prefix": settings.chunking.heading_prefix,
        "tokenizer": embedder.name,
    }


def make_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    from rag.chunk import HFTokenCounter

    counter = HFTokenCounter(embedder.tokenizer)
    prefix_tokens = counter.count(settings.embedding.passage_prefix) if settings.embedding.passage_prefix else 0
    max_tokens = embedder.max_seq_length - counter.special_tokens - prefix_tokens
    return Chunker(settings.chunking, counter, max_tokens, settings.ingest.csv_rows_per_chunk)


class Indexer:
    def __init__(self, settings: Settings, embedder: Embedder, store: IndexStore) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store

    def run(self, paths: list[Path], progress: IndexProgress | None = None) -> IndexReport:
        progress = progress or _NoProgress()
        started = time.perf_counter()
        report = IndexReport(index=str(self.store.path))

        def note(path: str, error: RagError) -> None:
            # Errors that know where inside the file they are (a JSONL line) say so themselves.
            path = getattr(error, "where", None) or path
            reason = getattr(error, "reason", None) or str(error)
            problem = Problem(path, reason, "skipped" if isinstance(error, SkipDocument) else "failed")
            report.problems.append(problem)
            progress.problem(problem)
            log.debug("%s %s: %s", problem.kind, path, problem.reason)

        files, missing = discover([Path(p) for p in paths], self.settings.ingest)
        for path, reason in missing:
            note(path, RagError(reason))
        if not files:
            report.seconds = time.perf_counter() - started
            return report

        self.embedder.warm_up()
        chunker = make_chunker(self.settings, self.embedder)
        sizes = {src.path: _size(src.path) for src in files}
        progress.start(sum(sizes.values()), len(files))
        seen: dict[str, str] = {}
        pending: list[tuple[Document, list[Chunk], bool]] = []
        pending_chunks = 0

        with self.store.open_writer(self.embedder.identity(), chunking_identity(self.settings, self.embedder)) as writer:

            def flush() -> None:
                nonlocal pending, pending_chunks
                if not pending:
                    return
                log.info("stage: embedding %d chunks", pending_chunks)
                vectors = self.embedder.embed_passages([c.embed_text for _, chunks, _ in pending for c in chunks])
                offset = 0
                for document, chunks, existed in pending:
                    writer.put_document(document, chunks, vectors[offset:offset + len(chunks)])
                    offset += len(chunks)
                    if existed:
                        report.updated += 1
                    else:
                        report.added += 1
                    report.chunks += len(chunks)
                progress.advance(sum(d.size for d, _, _ in pending), len(pending), pending_chunks)
                pending, pending_chunks = [], 0

            for src in files:
                reported = 0  # bytes of this file already counted in progress
                for item in load_source(src, self.settings.ingest):
                    if isinstance(item, RagError):
                        note(src.rel, item)
                        continue
                    document = item
                    reported += document.size
                    where = src.rel
                    if document.doc_id in seen:
                        note(where, RagError(f"duplicate document id {document.doc_id!r} (already read from "
                                             f"{seen[document.doc_id]}); ids must be unique"))
                        continue
                    seen[document.doc_id] = where
                    old_sha = writer.document_sha(document.doc_id)
                    if old_sha == document.metadata["sha256"]:
                        report.unchanged += 1
                        progress.advance(document.size, 1, 0)
                        continue
                    chunks = chunker.chunk(document)
                    if not chunks:
                        note(where, SkipDocument("no text left after chunking"))
                        progress.advance(document.size, 0, 0)
                        continue
                    pending.append((document, chunks, old_sha is not None))
                    pending_chunks += len(chunks)
                    if pending_chunks >= EMBED_FLUSH_CHUNKS:
                        flush()
                # What the documents did not account for (failed records, headers, a skipped file).
                progress.advance(max(0, sizes[src.path] - reported), 0, 0)
            flush()
            report.version = writer.commit() or self.store.current_version()

        report.seconds = time.perf_counter() - started
        return report


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
