"""One run of a source (rag.sources): its listing compared with what the last run recorded, only
new and changed items fetched and read, and the source's documents that are gone removed under
the same `--sync` guard as a folder's.

Every document of an item carries the origin `source:NAME:ITEM` (attachments included), so the
run's scope is exactly the source's documents, and an item that was not fetched (unchanged, or
failed) keeps all of its documents. A listing that fails raises before anything is written.
"""

from __future__ import annotations

import fnmatch
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rag.errors import RagError
from rag.indexing.report import IndexProgress, IndexReport
from rag.indexing.run import Indexer
from rag.indexing.sources import Event, Failed, Read, event, loaded_documents, with_upload_acl
from rag.indexing.sync import SyncScope
from rag.ingest.discover import SourceFile
from rag.ingest.loaders import supported_extensions
from rag.sources.base import Item, Source, SourceError


def origin_prefix(source_name: str) -> str:
    return f"source:{source_name}:"


@dataclass
class SourceRun:
    """What a run did, and each item's version as the index now holds it (for the next run)."""

    report: IndexReport
    versions: dict[str, str] = field(default_factory=dict)
    listed: int = 0
    fetched: int = 0


def selected(items: list[Item], include: list[str], exclude: list[str]) -> list[Item]:
    """The items of a type rag reads whose ids match an include glob (all when none) and no
    exclude glob."""
    def matches(item_id: str, globs: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(item_id, g) or PurePosixPath(item_id).match(g) for g in globs)
    readable = set(supported_extensions())
    return [i for i in items if PurePosixPath(i.id).suffix.lower() in readable
            and (not include or matches(i.id, include)) and not matches(i.id, exclude)]


def run_source(indexer: Indexer, source: Source, known: dict[str, str], held: set[str],
               include: list[str] | None = None, exclude: list[str] | None = None,
               progress: IndexProgress | None = None, sync: bool = True) -> SourceRun:
    """Index what changed in `source` since `known` (item id -> version recorded by the last run);
    `held`: the ids the index holds from this source now (an item it lost is read again)."""
    listing = selected(list(source.items()), include or [], exclude or [])  # SourceError: nothing touched
    prefix = origin_prefix(source.name)
    run = SourceRun(IndexReport(), listed=len(listing))
    keep: set[str] = set()
    unchanged = [i for i in listing if known.get(i.id) == i.version and i.id in held]
    for item in unchanged:
        keep.add(prefix + item.id)
        run.versions[item.id] = item.version
    changed = [i for i in listing if prefix + i.id not in keep]

    def events() -> Iterator[Event]:
        for item in unchanged:
            yield Read(item.size)
        with tempfile.TemporaryDirectory(prefix="rag-source-") as folder:
            for item in changed:
                yield from _read_item(indexer, source, item, Path(folder), keep, run)

    run.report = indexer.run_events(events(), sum(i.size for i in listing), len(listing), progress,
                                    SyncScope(prefix=prefix) if sync else None, keep)
    run.report.unchanged += len(unchanged)
    return run


def _read_item(indexer: Indexer, source: Source, item: Item, folder: Path, keep: set[str],
               run: SourceRun) -> Iterator[Event]:
    """An item's documents, read from a temporary copy removed right after."""
    origin = origin_prefix(source.name) + item.id
    try:
        data = source.fetch(item)
    except SourceError as exc:
        keep.add(origin)  # not read: what the index holds from it stays
        yield Failed(item.id, exc)
        return
    run.fetched += 1
    copy = folder / (uuid.uuid4().hex + PurePosixPath(item.id).suffix.lower())
    copy.write_bytes(data)
    failed = False
    try:
        for loaded in loaded_documents(SourceFile(copy, item.id), indexer.file_reader(), origin):
            read = event(item.id, with_upload_acl(loaded, item.acl))
            failed = failed or isinstance(read, Failed)
            yield read
    except RagError as exc:
        failed = True
        yield Failed(item.id, exc)
    finally:
        copy.unlink(missing_ok=True)
    if failed:
        keep.add(origin)
    else:
        run.versions[item.id] = item.version
    yield Read(len(data))
