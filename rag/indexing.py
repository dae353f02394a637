"""Files in, index version out: discover, load, chunk, embed, write, commit.

A bad file costs one line in the report and nothing else: the batch goes on, and since
all changes land in one new version, nothing already indexed is touched by a failure.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Protocol

import numpy as np

from rag.chunk import Chunker
from rag.config import IngestSettings, Settings
from rag.embed import Embedder
from rag.errors import RagError, SkipDocument
from rag.index.chunkstore import StoredDocument
from rag.index.store import IndexStore, IndexWriter
from rag.ingest import discover, load_source
from rag.ingest.discover import SourceFile, is_within
from rag.ingest.records import iter_jsonl_lines
from rag.records import Chunk, Document

log = logging.getLogger(__name__)

# Chunks embedded per call: large enough for length-sorted batches, small enough to bound memory.
EMBED_FLUSH_CHUNKS = 512


class SeenIds:
    """The document ids one run has read, and where each came from.

    Kept in a SQLite file in a temporary folder (SQLite holds a few MB of it in memory and
    spills the rest), so that a stream of millions of records runs in bounded memory.
    """

    def __init__(self, parent: str | None = None) -> None:
        try:
            self.folder = tempfile.mkdtemp(prefix="rag-run-", dir=parent)
            self._db = sqlite3.connect(os.path.join(self.folder, "seen.sqlite"))
            self._db.execute("PRAGMA journal_mode = OFF")  # scratch data: nothing to recover
            self._db.execute("PRAGMA synchronous = OFF")
            self._db.execute("CREATE TABLE seen (doc_id TEXT PRIMARY KEY, location TEXT NOT NULL) WITHOUT ROWID")
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc, parent or tempfile.gettempdir()) from exc

    @staticmethod
    def _error(exc: BaseException, folder: str) -> RagError:
        return RagError(f"cannot keep this run's document ids in a temporary file under {folder} ({exc}); "
                        "free space there or point TMPDIR at a folder with room; the index is unchanged.")

    def add(self, doc_id: str, where: str) -> str | None:
        """Record `doc_id`; if this run already read it, where from (and record nothing)."""
        try:
            if self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (doc_id, where)).rowcount:
                return None
            return self._db.execute("SELECT location FROM seen WHERE doc_id = ?", (doc_id,)).fetchone()[0]
        except sqlite3.Error as exc:
            raise self._error(exc, self.folder) from exc

    def __contains__(self, doc_id: str) -> bool:
        try:
            return self._db.execute("SELECT 1 FROM seen WHERE doc_id = ?", (doc_id,)).fetchone() is not None
        except sqlite3.Error as exc:
            raise self._error(exc, self.folder) from exc

    def close(self) -> None:
        self._db.close()
        shutil.rmtree(self.folder, ignore_errors=True)


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
            "unchanged": self.unchanged, "deleted": self.deleted, "deduplicated": self.deduplicated,
            "chunks": self.chunks,
            "skipped": self.skipped, "failed": self.failed, "seconds": round(self.seconds, 3),
            "would_delete": self.would_delete, "sync_stopped": self.sync_stopped or None,
            "stages": {stage: round(seconds, 3) for stage, seconds in self.stages.items()},
            "problems": [{"path": p.path, "reason": p.reason, "kind": p.kind} for p in self.problems],
        }


@dataclass
class _Batch:
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


class _Serialized:
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


class StageClock:
    """Adds up the seconds spent in each stage of a run (IndexReport.stages)."""

    def __init__(self, stages: dict[str, float]) -> None:
        self.stages = stages

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - started

    def iterate(self, items: Iterable[Item], stage: str) -> Iterator[Item]:
        """Yields what `items` yields, counting the time spent producing it (parsing)."""
        items = iter(items)
        while True:
            with self(stage):
                item = next(items, None)
            if item is None:
                return
            yield item


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


# What a source yields to the indexing loop: a document or an error with where it came from,
# or a count of bytes read that no document accounts for (headers, failed records).
Item = tuple[str, "Document | Prepared | RagError | int"]


@dataclass
class Prepared:
    """A document another process (a Ray worker) already chunked and embedded.

    The writer decides about it exactly as about a document it loaded itself (new, changed,
    unchanged, a duplicate, the content of another) and writes these chunks and vectors where
    it would have made its own. `chunks` is None where the worker saw the document's content
    already indexed under its id, and so skipped the work a writer never asks for then.
    """

    document: Document
    chunks: list[Chunk] | None
    vectors: np.ndarray | None
    # Each chunk's BM25 tokens as the index stores them (`serialize_tokens`), made with the
    # index's tokenizer settings: the writer's own share of the work, moved to the workers.
    tokens: list[str] | None = None
    # Instead of `vectors`: the chunks' vectors encoded for the index's trained IVF index (its
    # list and code, VectorIndex.encode), the rest of the writer's work moved to the workers.
    codes: np.ndarray | None = None


class Preparer(Protocol):
    """Turns sources into documents, in order: loaded here, or prepared elsewhere (Ray)."""

    def files(self, files: list[SourceFile]) -> Iterator[Iterable[Document | Prepared | RagError]]:
        """One iterable per file, in the order given, of what loading it gave."""
        ...

    def documents(self, items: Iterable[Document | RagError]) -> Iterator[Document | Prepared | RagError]:
        """Records already read (JSON Lines): each document, or prepared, in the order given."""
        ...


def loaded_documents(src: SourceFile, settings: IngestSettings, origin: str | None) -> Iterator[Document | RagError]:
    """A file's documents; those of a temporary upload (`origin` given) named as it was sent."""
    for item in load_source(src, settings):
        if origin is not None and isinstance(item, Document):
            item.origin = origin
            item.metadata["source"] = src.rel
        yield item


class LocalPreparer:
    """Loads files in this process, one at a time as the writer asks (memory stays bounded)."""

    def __init__(self, settings: IngestSettings, origin: str | None) -> None:
        self.settings = settings
        self.origin = origin

    def files(self, files: list[SourceFile]) -> Iterator[Iterable[Document | Prepared | RagError]]:
        for src in files:
            yield loaded_documents(src, self.settings, self.origin)

    def documents(self, items: Iterable[Document | RagError]) -> Iterator[Document | Prepared | RagError]:
        yield from items


# The origin of records streamed in with --jsonl (a file's documents have its real path).
STREAM_ORIGIN = "stream"


@dataclass
class SyncScope:
    """Which indexed documents a `--sync` run may remove: those of its collection read from
    the folders and files it names (or, for a stream, streamed records), never others."""

    roots: list[Path] = field(default_factory=list)
    stream: str | None = None  # the stream's name, for documents indexed before origins were kept

    def origin_of(self, stored: StoredDocument) -> str:
        """Its recorded origin; for a document indexed before origins were kept, the one it
        would have now ("" when that cannot be told)."""
        if stored.origin:
            return stored.origin
        if self.stream is not None:
            return STREAM_ORIGIN if stored.format == "record" and stored.source == self.stream else ""
        return os.path.realpath(stored.source)

    def covers(self, stored: StoredDocument) -> bool:
        origin = self.origin_of(stored)
        if self.stream is not None:
            return origin == STREAM_ORIGIN
        return bool(origin) and any(is_within(Path(origin), root) for root in self.roots)


class Indexer:
    def __init__(self, settings: Settings, embedder: Embedder, store: IndexStore, replace: bool = False,
                 origin: str | None = None, preparer: Callable[["Indexer"], Preparer] | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self.collection = settings.ingest.collection
        # Let documents read from elsewhere replace same-id documents of the collection.
        self.replace = replace
        # The origin every file's documents get instead of their real path, and their source is
        # then their path inside the folder: uploads are read from a new temporary file each
        # time, yet one upload may replace an earlier one.
        self.origin = origin
        # Where documents are loaded, chunked and embedded: here, or on a Ray cluster.
        self.preparer = (preparer or (lambda indexer: LocalPreparer(indexer.settings.ingest, indexer.origin)))(self)
        # The open writer while a run is under way: a preparer elsewhere asks it what is indexed.
        self.writer: IndexWriter | None = None

    def stored_content(self) -> Iterator[tuple[str, str]]:
        """(id, sha256) of each document of the collection, as the run's writer sees them, streamed."""
        if self.writer is None:
            raise RuntimeError("stored_content is only known while a run holds the writer")
        return ((stored.doc_id, stored.sha256) for stored in self.writer.documents_in(self.collection))

    def run(self, paths: list[Path], progress: IndexProgress | None = None, sync: bool = False) -> IndexReport:
        """Index files and folders; with `sync`, also remove documents that are no longer there."""
        progress = progress or _NoProgress()
        found = discover([Path(p) for p in paths], self.settings.ingest)
        if found.missing and sync:
            path, reason = found.missing[0]
            raise RagError(f"{path}: {reason}; --sync needs every path to exist, or it would "
                           "delete what was indexed from it")
        sizes = {src.path: _size(src.path) for src in found.files}
        keep_origins: set[str] = set()  # files that failed to load keep what was indexed from them

        def items() -> Iterator[Item]:
            for path, reason in found.missing:
                yield path, RagError(reason)
            for path, reason in found.skipped:
                yield path, SkipDocument(reason)
            for src, loaded in zip(found.files, self.preparer.files(found.files)):
                reported = 0
                for item in loaded:
                    if isinstance(item, RagError):
                        keep_origins.add(self.origin or str(src.real))
                    else:
                        reported += (item.document if isinstance(item, Prepared) else item).size
                    yield str(src.path), item
                yield str(src.path), max(0, sizes[src.path] - reported)

        return self._index(items(), sum(sizes.values()), len(found.files), progress,
                           SyncScope(roots=found.roots) if sync else None, keep_origins)

    def run_jsonl(self, stream: Iterable[bytes], name: str, progress: IndexProgress | None = None,
                  sync: bool = False, total_bytes: int = 0) -> IndexReport:
        """Index records ({"id", "text", "metadata"}) from a JSON Lines stream, one line in memory
        at a time, so a nightly job can pipe in millions."""
        keep_origins: set[str] = set()
        # An operator's stream, unless the run says whose records these are (API uploads).
        origin = self.origin or STREAM_ORIGIN

        def items() -> Iterator[Item]:
            records = iter_jsonl_lines(stream, name, name, self.settings.ingest, None, origin, whole_lines=sync)
            for item in self.preparer.documents(records):
                if isinstance(item, RagError):
                    keep_origins.add(origin)
                yield name, item

        return self._index(items(), total_bytes, 1, progress or _NoProgress(),
                           SyncScope(stream=name) if sync else None, keep_origins)

    def _conflict(self, stored: StoredDocument, document: Document, where: str) -> RagError | None:
        """Refuse a document that would silently replace one read from somewhere else."""
        if self.replace or stored.origin is None or stored.origin == document.origin:
            return None
        return RagError(
            f"document id {document.doc_id!r} of collection {self.collection!r} is already indexed from "
            f"{stored.source}; {where} would replace it. To keep both, index this source into its own "
            "collection (--collection NAME); to replace the indexed one, run again with --replace")

    def _index(self, items: Iterator[Item], total_bytes: int, files: int, progress: IndexProgress,
               scope: SyncScope | None, keep_origins: set[str]) -> IndexReport:
        started = time.perf_counter()
        report = IndexReport(index=str(self.store.path), collection=self.collection)
        collection = self.collection

        def note(path: str, error: RagError) -> None:
            # Errors that know where inside the file they are (a JSONL line) say so themselves.
            path = getattr(error, "where", None) or path
            reason = getattr(error, "reason", None) or str(error)
            problem = Problem(path, reason, "skipped" if isinstance(error, SkipDocument) else "failed")
            report.problems.append(problem)
            progress.problem(problem)
            log.debug("%s %s: %s", problem.kind, path, problem.reason)

        self.store.current_version()  # an unusable --index is named before the model loads
        clock = StageClock(report.stages)
        with clock("load"):
            self.embedder.warm_up()
        chunker = make_chunker(self.settings, self.embedder)
        progress = _Serialized(progress)  # the embedding thread reports too
        progress.start(total_bytes, files)
        pending = _Batch()
        # The batch being embedded on the embedding thread while this one reads, chunks and
        # writes: one at a time, so memory stays bounded.
        embedding: tuple[Future, _Batch] | None = None

        with closing(SeenIds()) as seen, ThreadPoolExecutor(1, thread_name_prefix="rag-embed") as embedder_thread, \
                self.store.open_writer(self.embedder.identity(), chunking_identity(self.settings, self.embedder)) as writer, \
                self._holding(writer):

            def count(existed: bool) -> None:
                if existed:
                    report.updated += 1
                else:
                    report.added += 1

            def embed(batch: _Batch) -> list[np.ndarray | None]:
                """Each document's vectors: given, made here, or None where it came encoded."""
                given = [p.vectors if p is not None else None for p in batch.prepared]
                todo = [p is None for p in batch.prepared]
                chunks = [c for (_, document_chunks, _), wanted in zip(batch.documents, todo) if wanted
                          for c in document_chunks]
                if not chunks:  # every document came embedded (or encoded)
                    progress.advance(batch.embedded_size, 0, batch.chunks)
                    return given
                with clock("embed"):
                    made = iter(self._embed([c.embed_text for c in chunks], batch.embedded_size, progress,
                                            [c.token_ids for c in chunks]))
                return [np.stack([next(made) for _ in document_chunks]) if wanted else vectors
                        for (_, document_chunks, _), vectors, wanted in zip(batch.documents, given, todo)]

            def collect() -> None:
                """Wait for the batch being embedded and write it."""
                nonlocal embedding
                if embedding is None:
                    return
                future, batch = embedding
                vectors = future.result()
                embedding = None
                with clock("write"):
                    for (document, chunks, existed), document_vectors, made_elsewhere in zip(
                            batch.documents, vectors, batch.prepared):
                        writer.put_document(document, collection, chunks, document_vectors,
                                            made_elsewhere.tokens if made_elsewhere is not None else None,
                                            made_elsewhere.codes if made_elsewhere is not None else None)
                        count(existed)
                        report.chunks += len(chunks)
                    for document, existed in batch.aliases:
                        writer.put_alias(document, collection, batch.content[document.metadata["sha256"]])
                        count(existed)
                progress.advance(batch.size - batch.embedded_size, len(batch.documents) + len(batch.aliases), 0)

            def flush() -> None:
                """Hand the pending batch to the embedding thread, once the one before is written."""
                nonlocal pending, embedding
                collect()
                if not pending.documents:
                    return
                log.info("stage: embedding %d chunks", pending.chunks)
                pending.embedded_size = pending.size
                embedding = (embedder_thread.submit(embed, pending), pending)
                pending = _Batch()

            for where, item in clock.iterate(items, "parse"):
                if isinstance(item, int):
                    progress.advance(item, 0, 0)
                    continue
                if isinstance(item, RagError):
                    note(where, item)
                    continue
                prepared = item if isinstance(item, Prepared) else None
                document = prepared.document if prepared is not None else item
                where = document.where or where
                first_read = seen.add(document.doc_id, where)
                if first_read is not None:
                    note(where, RagError(f"duplicate document id {document.doc_id!r} (already read from "
                                         f"{first_read}); ids must be unique within a collection: index one "
                                         "of the two into another collection (--collection NAME)"))
                    progress.advance(document.size, 0, 0)
                    continue
                stored = writer.document(collection, document.doc_id)
                conflict = self._conflict(stored, document, where) if stored is not None else None
                if conflict is not None:
                    note(where, conflict)
                    progress.advance(document.size, 0, 0)
                    continue
                sha = document.metadata["sha256"]
                if stored is not None and stored.sha256 == sha:
                    if stored.origin != (document.origin or None):
                        writer.relocate(collection, document)
                    report.unchanged += 1
                    progress.advance(document.size, 1, 0)
                    continue
                # Identical content under another id is stored once: no chunks, no embedding.
                holding = next((b for b in (pending, embedding and embedding[1]) if b and sha in b.content), None)
                if holding is not None:
                    holding.aliases.append((document, stored is not None))
                    continue
                holder = writer.document_with_content(collection, sha)
                if holder is not None and holder != document.doc_id:
                    writer.put_alias(document, collection, holder)
                    count(stored is not None)
                    report.deduplicated += 1
                    progress.advance(document.size, 1, 0)
                    continue
                if prepared is not None:
                    if prepared.chunks is None:
                        # The preparer and this writer read the same index: it cannot skip what is asked for.
                        raise RagError(f"{where}: document {document.doc_id!r} came back unprepared; run again")
                    chunks = prepared.chunks
                else:
                    with clock("chunk"):
                        chunks = chunker.chunk(document)
                if not chunks:
                    note(where, SkipDocument("no text left after chunking"))
                    progress.advance(document.size, 0, 0)
                    continue
                pending.add(document, chunks, stored is not None, prepared)
                if pending.chunks >= EMBED_FLUSH_CHUNKS:
                    flush()
            flush()
            collect()
            with clock("write"):
                if scope is not None:
                    self._sync(writer, scope, seen, keep_origins, report)
                report.version = writer.commit() or self.store.current_version()

        report.seconds = time.perf_counter() - started
        return report

    @contextmanager
    def _holding(self, writer: IndexWriter) -> Iterator[None]:
        self.writer = writer
        try:
            yield
        finally:
            self.writer = None

    def _embed(self, texts: list[str], nbytes: int, progress: IndexProgress,
               token_ids: list[list[int] | None] | None = None) -> np.ndarray:
        """Embed in slices, reporting chunks (and a share of the bytes) as each slice is done, so
        one large document shows progress while its thousands of chunks are embedded."""
        parts, reported = [], 0
        for start in range(0, len(texts), EMBED_FLUSH_CHUNKS):
            part = self.embedder.embed_passages(texts[start:start + EMBED_FLUSH_CHUNKS],
                                                token_ids[start:start + EMBED_FLUSH_CHUNKS] if token_ids else None)
            parts.append(part)
            done = nbytes * min(len(texts), start + EMBED_FLUSH_CHUNKS) // len(texts)
            progress.advance(done - reported, 0, len(part))
            reported = done
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _sync(self, writer: IndexWriter, scope: SyncScope, seen: SeenIds, keep_origins: set[str],
              report: IndexReport) -> None:
        """Remove the documents of this run's scope that it did not read, unless that would
        remove more than index.sync_max_delete of the scope."""
        in_scope = 0
        gone: list[str] = []
        kept = 0  # not read, but their file (or the stream) failed: kept rather than trusted gone
        for stored in writer.documents_in(self.collection):
            if not scope.covers(stored):
                continue
            in_scope += 1
            if stored.doc_id in seen:
                continue
            if scope.origin_of(stored) in keep_origins:
                kept += 1
            else:
                gone.append(stored.doc_id)
        if scope.stream is not None and keep_origins:
            report.would_delete = kept
            if kept:
                report.sync_stopped = (f"--sync deleted nothing: records of this stream failed, so it may be "
                                       f"incomplete ({kept} indexed documents were not in it)")
            return
        share = self.settings.index.sync_max_delete
        if gone and len(gone) > share * in_scope:
            report.would_delete = len(gone)
            report.sync_stopped = (
                f"--sync stopped: it would delete {len(gone)} of the {in_scope} documents of collection "
                f"{self.collection!r} read from {scope.stream or ', '.join(map(str, scope.roots))} "
                f"({len(gone) / in_scope:.0%}), more than index.sync_max_delete ({share:.0%}); nothing was deleted. "
                f"If that is intended, run again with --max-delete {math.ceil(100 * len(gone) / in_scope) / 100:g}")
            return
        for doc_id in gone:
            writer.delete_document(self.collection, doc_id)
            report.deleted += 1


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
