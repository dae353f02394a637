"""Documents embedded and written in batches: a batch is embedded on its own thread while the run
reads, chunks and decides about the next, one batch at a time, so memory stays bounded."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from rag.embed import Embedder
from rag.index.writer import IndexWriter
from rag.indexing.report import IndexProgress, IndexReport
from rag.indexing.sources import Prepared
from rag.records import Chunk, Document
from rag.timing import StageClock

log = logging.getLogger(__name__)

# Chunks embedded per call: large enough for length-sorted batches, small enough to bound memory.
EMBED_FLUSH_CHUNKS = 512


@dataclass
class Batch:
    """Documents to embed and write together, and the documents sharing their content."""

    documents: list[tuple[Document, list[Chunk], bool]] = field(default_factory=list)  # (doc, chunks, existed)
    # Each document as it came prepared (a Ray worker embedded and tokenized it), else None.
    prepared: list[Prepared | None] = field(default_factory=list)
    aliases: list[tuple[Document, bool]] = field(default_factory=list)
    content: dict[str, str] = field(default_factory=dict)  # sha256 -> the id of the document holding it
    chunks: int = 0
    embedded_size: int = 0  # bytes whose progress the embedding reports (aliases may join later)

    def add(self, document: Document, chunks: list[Chunk], existed: bool, prepared: Prepared | None = None) -> None:
        self.documents.append((document, chunks, existed))
        self.prepared.append(prepared)
        self.content[document.metadata["sha256"]] = document.doc_id
        self.chunks += len(chunks)

    @property
    def size(self) -> int:
        return sum(d.size for d, _, _ in self.documents) + sum(d.size for d, _ in self.aliases)


class EmbeddingPipeline:
    """The batch being filled, and the one being embedded; written in order by the run's writer.
    Use as a context manager (the embedding thread)."""

    def __init__(self, embedder: Embedder, writer: IndexWriter, collection: str, report: IndexReport,
                 progress: IndexProgress, clock: StageClock) -> None:
        self.embedder = embedder
        self.writer = writer
        self.collection = collection
        self.report = report
        self.progress = progress
        self.clock = clock
        self.pending = Batch()
        self._embedding: tuple[Future[list[np.ndarray | None]], Batch] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rag-embed")

    def __enter__(self) -> "EmbeddingPipeline":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._thread.shutdown(wait=True)

    def holder(self, sha256: str) -> str | None:
        """The id holding this content in the pending batch or the one being embedded."""
        batch = self._batch_holding(sha256)
        return batch.content[sha256] if batch is not None else None

    def _batch_holding(self, sha256: str) -> Batch | None:
        embedding = self._embedding[1] if self._embedding is not None else None
        return next((b for b in (self.pending, embedding) if b is not None and sha256 in b.content), None)

    def alias(self, document: Document, existed: bool) -> None:
        """A document whose content a batch holds: written with that batch, as its alias."""
        self._batch_holding(document.metadata["sha256"]).aliases.append((document, existed))  # type: ignore[union-attr]

    def add(self, document: Document, chunks: list[Chunk], existed: bool, prepared: Prepared | None) -> None:
        self.pending.add(document, chunks, existed, prepared)
        if self.pending.chunks >= EMBED_FLUSH_CHUNKS:
            self.flush()

    def flush(self) -> None:
        """Hand the pending batch to the embedding thread, once the one before is written."""
        self.collect()
        if not self.pending.documents:
            return
        log.info("stage: embedding %d chunks", self.pending.chunks)
        self.pending.embedded_size = self.pending.size
        self._embedding = (self._thread.submit(self._embed, self.pending), self.pending)
        self.pending = Batch()

    def collect(self) -> None:
        """Wait for the batch being embedded and write it."""
        if self._embedding is None:
            return
        future, batch = self._embedding
        vectors = future.result()
        self._embedding = None
        with self.clock("write"):
            for (document, chunks, existed), document_vectors, made in zip(batch.documents, vectors, batch.prepared):
                self.writer.put_document(document, self.collection, chunks, document_vectors,
                                         made.tokens if made is not None else None,
                                         made.codes if made is not None else None)
                self.report.count_written(existed)
                self.report.chunks += len(chunks)
            for document, existed in batch.aliases:
                self.writer.put_alias(document, self.collection, batch.content[document.metadata["sha256"]])
                self.report.count_written(existed)
        self.progress.advance(batch.size - batch.embedded_size, len(batch.documents) + len(batch.aliases), 0)

    def finish(self) -> None:
        """Embed and write what is left."""
        self.flush()
        self.collect()

    def _embed(self, batch: Batch) -> list[np.ndarray | None]:
        """Each document's vectors: given, made here, or None where it came encoded."""
        given = [p.vectors if p is not None else None for p in batch.prepared]
        todo = [p is None for p in batch.prepared]
        chunks = [c for (_, document_chunks, _), wanted in zip(batch.documents, todo) if wanted for c in document_chunks]
        if not chunks:  # every document came embedded (or encoded)
            self.progress.advance(batch.embedded_size, 0, batch.chunks)
            return given
        with self.clock("embed"):
            made = iter(self._embed_slices([c.embed_text for c in chunks], batch.embedded_size,
                                           [c.token_ids for c in chunks]))
        return [np.stack([next(made) for _ in document_chunks]) if wanted else vectors
                for (_, document_chunks, _), vectors, wanted in zip(batch.documents, given, todo)]

    def _embed_slices(self, texts: list[str], nbytes: int, token_ids: list[list[int] | None]) -> np.ndarray:
        """Embed in slices, reporting chunks (and a share of the bytes) as each slice is done, so
        one large document shows progress while its thousands of chunks are embedded."""
        parts, reported = [], 0
        for start in range(0, len(texts), EMBED_FLUSH_CHUNKS):
            part = self.embedder.embed_passages(texts[start:start + EMBED_FLUSH_CHUNKS],
                                                token_ids[start:start + EMBED_FLUSH_CHUNKS])
            parts.append(part)
            done = nbytes * min(len(texts), start + EMBED_FLUSH_CHUNKS) // len(texts)
            self.progress.advance(done - reported, 0, len(part))
            reported = done
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
