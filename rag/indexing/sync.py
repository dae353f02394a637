"""`--sync`: remove the documents of a run's scope it did not read, and trust nothing that may be
cut short (a stream whose records failed, or a sync that would remove most of its scope)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from rag.index.rows import StoredDocument
from rag.index.writer import IndexWriter
from rag.indexing.report import IndexReport
from rag.indexing.seen import SeenIds
from rag.indexing.sources import STREAM_ORIGIN
from rag.ingest.discover import is_within


@dataclass
class SyncScope:
    """Which indexed documents a `--sync` run may remove: those of its collection read from
    the folders and files it names (or, for a stream, streamed records), never others."""

    roots: list[Path] = field(default_factory=list)
    stream: str | None = None  # the stream's name, for documents indexed before origins were kept
    prefix: str | None = None  # a source's documents: those whose origin starts with it


    def origin_of(self, stored: StoredDocument) -> str:
        """Its recorded origin; for a document indexed before origins were kept (format 1), the
        one it would have now ("" when that cannot be told)."""
        if stored.origin:
            return stored.origin
        if self.prefix is not None:
            return ""
        if self.stream is not None:
            return STREAM_ORIGIN if stored.format == "record" and stored.source == self.stream else ""
        return os.path.realpath(stored.source)

    def covers(self, stored: StoredDocument) -> bool:
        origin = self.origin_of(stored)
        if self.prefix is not None:
            return origin.startswith(self.prefix)
        if self.stream is not None:
            return origin == STREAM_ORIGIN
        return bool(origin) and any(is_within(Path(origin), root) for root in self.roots)


def sync(writer: IndexWriter, collection: str, scope: SyncScope, seen: SeenIds, keep_origins: set[str],
         max_share: float, report: IndexReport) -> None:
    """Remove the documents of the scope the run did not read, unless that would remove more
    than `max_share` (index.sync_max_delete) of the scope; `keep_origins`: sources that failed,
    whose documents are kept rather than trusted gone."""
    in_scope = 0
    gone: list[str] = []
    kept = 0
    for stored in writer.documents_in(collection):
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
    if gone and len(gone) > max_share * in_scope:
        report.would_delete = len(gone)
        report.sync_stopped = (
            f"--sync stopped: it would delete {len(gone)} of the {in_scope} documents of collection "
            f"{collection!r} read from {scope.stream or scope.prefix or ', '.join(map(str, scope.roots))} "
            f"({len(gone) / in_scope:.0%}), more than index.sync_max_delete ({max_share:.0%}); nothing was deleted. "
            f"If that is intended, run again with --max-delete {math.ceil(100 * len(gone) / in_scope) / 100:g}")
        return
    for doc_id in gone:
        writer.delete_document(collection, doc_id)
        report.deleted += 1
