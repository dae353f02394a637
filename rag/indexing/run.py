"""One indexing run: read the sources, decide about each document, embed and write in batches,
sync, commit one new version.

A bad file costs one line in the report and nothing else: the run goes on, and since all
changes land in one new version, nothing already indexed is touched by a failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from rag.chunk import Chunker
from rag.config import Settings
from rag.embed import Embedder
from rag.errors import IngestError, RagError, SkipDocument
from rag.index.rows import StoredDocument
from rag.index.store import IndexStore
from rag.index.writer import IndexWriter
from rag.indexing.batches import EmbeddingPipeline
from rag.indexing.decisions import decide
from rag.indexing.report import IndexProgress, IndexReport, NoProgress, Problem, SerializedProgress
from rag.indexing.seen import SeenIds
from rag.indexing.sources import (STREAM_ORIGIN, Event, Failed, IndexState, LocalPreparer, Loaded, PreparerFactory,
                                  Read, event, with_folder_acl, with_upload_acl)
from rag.indexing.sync import SyncScope, sync
from rag.ingest import discover
from rag.ingest.json_records import iter_jsonl_lines
from rag.ingest.loaders import FileReader
from rag.ingest.ragacl import Governed, govern, held_reason
from rag.records import Acl
from rag.timing import StageClock

log = logging.getLogger(__name__)


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
    def __init__(self, settings: Settings, embedder: Embedder, store: IndexStore, replace: bool = False,
                 origin: str | None = None, preparer: PreparerFactory | None = None,
                 acl: Acl | None = None) -> None:
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
        self.preparer = (preparer or LocalPreparer)(settings, origin)
        # Files with an origin (uploads): the list the request gave, for every document read,
        # records in an uploaded .jsonl included (their own lists are the uploader's to give).
        self.acl = acl

    def run(self, paths: list[Path], progress: IndexProgress | None = None, sync: bool = False) -> IndexReport:
        """Index files and folders; with `sync`, also remove documents that are no longer there."""
        found = discover([Path(p) for p in paths], self.settings.ingest)
        if found.missing and sync:
            path, reason = found.missing[0]
            raise RagError(f"{path}: {reason}; --sync needs every path to exist, or it would "
                           "delete what was indexed from it")
        # Each file's list from its folders' .ragacl; an upload's files take none (the request gives it).
        governed = govern(found.files) if self.origin is None else Governed(found.files, [None] * len(found.files))
        sizes = {src.path: _size(src.path) for src in governed.files}
        keep_origins: set[str] = set()  # files that failed to load keep what was indexed from them

        def events() -> Iterator[Event]:
            for path, reason in found.missing:
                yield Failed(path, RagError(reason))
            for path, reason in [*found.skipped, *governed.refused]:
                yield Failed(path, SkipDocument(reason))
            for acl_file, (error, held) in governed.held.items():
                keep_origins.update(str(src.real) for src in held)  # fail closed, and lose nothing
                yield Failed(str(acl_file), IngestError(held_reason(error, held)))
            for src, acl, loaded in zip(governed.files, governed.acls, self.preparer.files(governed.files)):
                reported = 0
                for item in loaded:
                    read = event(str(src.path), with_folder_acl(item, acl) if self.origin is None
                                 else with_upload_acl(item, self.acl))
                    if isinstance(read, Failed):
                        keep_origins.add(self.origin or str(src.real))
                    else:
                        reported += read.document.size
                    yield read
                yield Read(max(0, sizes[src.path] - reported))

        return self._index(events(), sum(sizes.values()), len(governed.files), progress or NoProgress(),
                           SyncScope(roots=found.roots) if sync else None, keep_origins)

    def run_jsonl(self, stream: Iterable[bytes], name: str, progress: IndexProgress | None = None,
                  sync: bool = False, total_bytes: int = 0) -> IndexReport:
        """Index records ({"id", "text", "metadata"}) from a JSON Lines stream, one line in memory
        at a time, so a nightly job can pipe in millions."""
        keep_origins: set[str] = set()
        # An operator's stream, unless the run says whose records these are (API uploads).
        origin = self.origin or STREAM_ORIGIN

        def events() -> Iterator[Event]:
            records = iter_jsonl_lines(stream, name, name, self.settings.ingest, None, origin, whole_lines=sync)
            for item in self.preparer.documents(records):
                read = event(name, item)
                if isinstance(read, Failed):
                    keep_origins.add(origin)
                yield read

        return self._index(events(), total_bytes, 1, progress or NoProgress(),
                           SyncScope(stream=name) if sync else None, keep_origins)

    def run_events(self, events: Iterator[Event], total_bytes: int, files: int, progress: IndexProgress | None,
                   scope: SyncScope | None, keep_origins: set[str]) -> IndexReport:
        """Index what another reader of documents (a source: rag.indexing.remote) yields, as one
        run: one writer, the same decisions, `scope`'s --sync and its guard."""
        return self._index(events, total_bytes, files, progress or NoProgress(), scope, keep_origins)

    def file_reader(self) -> FileReader:
        """The reader of files this run's preparer uses (valid once the run has started)."""
        reader: FileReader = self.preparer.reader  # type: ignore[attr-defined]
        return reader

    def _index(self, events: Iterator[Event], total_bytes: int, files: int, progress: IndexProgress,
               scope: SyncScope | None, keep_origins: set[str]) -> IndexReport:
        started = time.perf_counter()
        report = IndexReport(index=str(self.store.path), collection=self.collection)
        self.store.current_version()  # an unusable --index is named before the model loads
        clock = StageClock(report.stages)
        with clock("load"):
            self.embedder.warm_up()
        chunker = make_chunker(self.settings, self.embedder)
        progress = SerializedProgress(progress)  # the embedding thread reports too
        progress.start(total_bytes, files)
        identity = self.embedder.identity(), chunking_identity(self.settings, self.embedder)
        with closing(SeenIds()) as seen, self.store.open_writer(*identity) as writer, \
                EmbeddingPipeline(self.embedder, writer, self.collection, report, progress, clock) as pipeline:
            self.preparer.start(IndexState(_stored_content(writer, self.collection), writer.trained_template,
                                           _holds(writer, self.collection), progress.ocr_page))
            run = _Run(self, writer, pipeline, seen, chunker, clock, report, progress)
            for read in clock.iterate(events, "parse"):
                run.take(read)
            pipeline.finish()
            with clock("write"):
                if scope is not None:
                    sync(writer, self.collection, scope, seen, keep_origins, self.settings.index.sync_max_delete,
                         report)
                report.version = writer.commit() or self.store.current_version()
        report.seconds = time.perf_counter() - started
        return report


def _holds(writer: IndexWriter, collection: str) -> Callable[[str, str], bool]:
    """Whether the collection holds this id with exactly this content, as the run's writer sees it."""
    def holds(doc_id: str, sha256: str) -> bool:
        stored = writer.document(collection, doc_id)
        return stored is not None and stored.sha256 == sha256
    return holds


def _stored_content(writer: IndexWriter, collection: str) -> Iterator[tuple[str, str]]:
    """(id, sha256) of each document of the collection, as the run's writer sees them, streamed."""
    return ((stored.doc_id, stored.sha256) for stored in writer.documents_in(collection))


class _Run:
    """What one run holds while it takes its sources' events one by one."""

    def __init__(self, indexer: Indexer, writer: IndexWriter, pipeline: EmbeddingPipeline, seen: SeenIds,
                 chunker: Chunker, clock: StageClock, report: IndexReport, progress: IndexProgress) -> None:
        self.indexer = indexer
        self.collection = indexer.collection
        self.writer = writer
        self.pipeline = pipeline
        self.seen = seen
        self.chunker = chunker
        self.clock = clock
        self.report = report
        self.progress = progress

    # Holdings, for `decide`.

    def stored(self, doc_id: str) -> StoredDocument | None:
        return self.writer.document(self.collection, doc_id)

    def batch_holder(self, sha256: str) -> str | None:
        return self.pipeline.holder(sha256)

    def index_holder(self, sha256: str) -> str | None:
        return self.writer.document_with_content(self.collection, sha256)

    def note(self, where: str, error: RagError) -> None:
        # Errors that know where inside the file they are (a JSONL line) say so themselves.
        where = getattr(error, "where", None) or where
        reason = getattr(error, "reason", None) or str(error)
        problem = Problem(where, reason, "skipped" if isinstance(error, SkipDocument) else "failed")
        self.report.problems.append(problem)
        self.progress.problem(problem)
        log.debug("%s %s: %s", problem.kind, where, problem.reason)

    def take(self, read: Event) -> None:
        if isinstance(read, Read):
            self.progress.advance(read.nbytes, 0, 0)
            return
        if isinstance(read, Failed):
            self.note(read.where, read.error)
            return
        if read.document.sections or read.document.ocr_seconds:  # parsed in this run (not held unchanged)
            self.report.ocr_pages += int(read.document.metadata.get("ocr_pages") or 0)
            self.report.ocr_seconds += read.document.ocr_seconds
        self._decide(read)

    def _decide(self, read: Loaded) -> None:
        document, where, report = read.document, read.where, self.report
        decision = decide(document, where, self.seen.add(document.doc_id, where), self, self.collection,
                          self.indexer.replace)
        if decision.kind in ("duplicate", "conflict"):
            self.note(where, RagError(decision.reason))
            self.progress.advance(document.size, 0, 0)
        elif decision.kind in ("unchanged", "relocated", "acl_changed"):
            if decision.kind == "relocated":
                self.writer.relocate(self.collection, document)
            elif decision.kind == "acl_changed":
                self.writer.set_access(self.collection, document)
                report.acl_changed += 1
            report.unchanged += 1
            self.progress.advance(document.size, 1, 0)
        elif decision.kind == "alias" and decision.pending:
            self.pipeline.alias(document, decision.existed)  # written, and counted, with its holder
        elif decision.kind == "alias":
            self.writer.put_alias(document, self.collection, decision.holder)  # type: ignore[arg-type]
            report.count_written(decision.existed)
            report.deduplicated += 1
            self.progress.advance(document.size, 1, 0)
        else:
            self._embed_later(read, decision.existed)

    def _embed_later(self, read: Loaded, existed: bool) -> None:
        document, prepared = read.document, read.prepared
        if prepared is not None:
            if prepared.chunks is None:
                # The preparer and this writer read the same index: it cannot skip what is asked for.
                raise RagError(f"{read.where}: document {document.doc_id!r} came back unprepared; run again")
            chunks = prepared.chunks
        else:
            with self.clock("chunk"):
                chunks = self.chunker.chunk(document)
        if not chunks:
            self.note(read.where, SkipDocument("no text left after chunking"))
            self.progress.advance(document.size, 0, 0)
            return
        self.pipeline.add(document, chunks, existed, prepared)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
