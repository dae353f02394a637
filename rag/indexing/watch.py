"""`rag index FOLDER --watch`: keep an index in step with local folders, within seconds.

The folders' changes come from the operating system (watchfiles: inotify, FSEvents, ...), are
gathered until the folders have been quiet for `debounce` seconds (a burst of writes is one run,
never more than MAX_WAIT_FACTOR times that apart), and each batch is then one ordinary
`engine.index(folders, sync=True)` run: the one writer, under the index's lock, the same
decisions, hidden files and `.ragignore` as always, deletions and renames by `--sync` within its
guard. A run reads the whole folders, so whatever the events missed or merged, the index ends as
the folders are; the events only decide *when* to run.

Nothing is lost: the watcher starts before the first run, so changes made during any run (the
first included) start another one; while another process holds the index's lock, the batch
waits and retries, and the changes made meanwhile are gathered for the next. A change only rag
ignores (hidden files, editor temp files such as `.#x` and `.x.swp`, `x~` backups, files of a
type it cannot read, anything `.ragignore` or `ingest.exclude` leaves out, the index's own
folder) starts no run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from watchfiles import Change
from watchfiles._rust_notify import RustNotify  # the documented direct use of watchfiles' backend

from rag.config import IngestSettings, Settings
from rag.errors import IndexLockedError, RagError
from rag.indexing.report import IndexReport
from rag.ingest.discover import _ignored, _read_patterns, is_within
from rag.ingest.loaders import supported_extensions

# A batch waits for `debounce` seconds without a new change, but never longer than this many
# times that after its first change: a folder written to without pause is still indexed.
MAX_WAIT_FACTOR = 10
# Waits between tries while another process holds the index's lock: doubling, up to the last.
LOCK_PAUSES = (0.25, 0.5, 1.0, 2.0, 4.0)

T = TypeVar("T")


class _Store(Protocol):
    @property
    def path(self) -> Path: ...


class Indexes(Protocol):
    """What the watch needs of an Engine (kept a protocol: `indexing` does not import the engine)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> _Store: ...

    def index(self, paths: list[str | Path], progress: None = None, sync: bool = False,
              replace: bool = False) -> IndexReport: ...


@dataclass(frozen=True)
class Watching:
    """The folders are watched from now on: a change made after this is seen."""

    folders: tuple[str, ...]
    debounce: float


@dataclass(frozen=True)
class Waiting:
    """Another process holds the index's lock; the batch is tried again until it is free."""

    reason: str
    changes: int


@dataclass(frozen=True)
class Batch:
    """One run the watch made: the changes that started it (what, path relative to its folder;
    none for the first run) and the run's report, or why it failed."""

    changes: tuple[tuple[str, str], ...]
    report: IndexReport | None
    error: str = ""
    waited: float = 0.0  # seconds spent waiting for the index's lock
    first: bool = False

    def documents_per_second(self) -> float:
        """New and changed documents indexed per second of the run."""
        if self.report is None or self.report.seconds <= 0:
            return 0.0
        return self.report.documents / self.report.seconds

    def describe(self, named: int = 3) -> str:
        """'2 added, 1 deleted: a.md, b.md, old.md' (the first `named` paths)."""
        counts: dict[str, int] = {}
        for what, _ in self.changes:
            counts[what] = counts.get(what, 0) + 1
        paths = sorted({path for _, path in self.changes})
        listed = ", ".join(paths[:named]) + (f" and {len(paths) - named} more" if len(paths) > named else "")
        return ", ".join(f"{n} {what}" for what, n in counts.items()) + (f": {listed}" if listed else "")


WatchEvent = Watching | Waiting | Batch


@dataclass
class WatchResult:
    """How a watch ended: its runs, and the changes a stop left unindexed (the index's lock was
    held until then; the next `rag index --sync` takes them)."""

    batches: int = 0
    unindexed: list[tuple[str, str]] = field(default_factory=list)


def watch(engine: Indexes, paths: list[Path], report: Callable[[WatchEvent], None], stop: threading.Event,
          debounce: float = 0.5, *, first: Callable[[], IndexReport] | None = None, replace: bool = False,
          force_polling: bool | None = None) -> WatchResult:
    """Index the folders' changes until `stop` is set, one `engine.index(paths, sync=True)` run
    per debounced batch; `first`, the run that brings the index in step first, runs once the
    watcher is started (so nothing written during it is missed). Returns after the current batch
    once `stop` is set; each run, lock wait and the start are given to `report`."""
    folders = _folders(paths)
    relevant = ChangeFilter(folders, engine.settings.ingest, engine.store.path)
    result = WatchResult()
    step_ms = max(int(debounce * 1000), 10)
    with RustNotify([str(f) for f in folders], False, bool(force_polling), 100, True, False) as notify:
        if first is not None:
            ran = _run(first, (), report, stop)
            if ran is not None:
                result.batches += 1
                report(Batch((), ran[0], waited=ran[1], first=True))
        if not stop.is_set():
            report(Watching(tuple(str(f) for f in folders), debounce))
        while not stop.is_set():
            raw = notify.watch(step_ms * MAX_WAIT_FACTOR, step_ms, 0, stop)
            if not isinstance(raw, set):  # "stop" or "signal" (no handler of ours took it)
                break
            changes = relevant.changes(raw)
            if not changes:
                continue
            batch = _batch(engine, folders, changes, replace, report, stop)
            if batch is None:
                result.unindexed.extend(changes)
                break
            result.batches += 1
            report(batch)
    return result


def _batch(engine: Indexes, folders: list[Path], changes: list[tuple[str, str]], replace: bool,
           report: Callable[[WatchEvent], None], stop: threading.Event) -> Batch | None:
    """One run for these changes; None when `stop` came while the index's lock was held."""
    named: list[str | Path] = [*folders]
    try:
        ran = _run(lambda: engine.index(named, sync=True, replace=replace), changes, report, stop)
    except RagError as exc:
        gone = [str(f) for f in folders if not f.is_dir()]
        if gone:
            raise RagError(f"{', '.join(gone)}: the watched folder is gone; stopped watching") from None
        return Batch(tuple(changes), None, error=str(exc))
    if ran is None:
        return None
    return Batch(tuple(changes), ran[0], waited=ran[1])


def _run(call: Callable[[], T], changes: tuple[tuple[str, str], ...] | list[tuple[str, str]],
         report: Callable[[WatchEvent], None], stop: threading.Event) -> tuple[T, float] | None:
    """`call`, tried again while another process holds the index's lock (said once), and the
    seconds waited; None when `stop` is set while waiting."""
    started, tries = time.monotonic(), 0
    while True:
        waited = time.monotonic() - started
        try:
            return call(), waited
        except IndexLockedError as exc:
            if tries == 0:
                report(Waiting(str(exc), len(changes)))
            if stop.wait(LOCK_PAUSES[min(tries, len(LOCK_PAUSES) - 1)]):
                return None
            tries += 1


def _folders(paths: list[Path]) -> list[Path]:
    """The real folders to watch; a path that is not a folder is the user's to fix."""
    folders = []
    for path in paths:
        if not path.is_dir():
            raise RagError(f"{path}: --watch watches folders, and this is "
                           + ("a file; name its folder" if path.exists() else "not there"))
        real = Path(os.path.realpath(path))
        if real not in folders:
            folders.append(real)
    return folders


class ChangeFilter:
    """Which changes a run would see: files of a type rag reads, and folders, that are neither
    hidden nor left out by `ingest.exclude` or a folder's ignore file (whose own change counts:
    it changes what is read); nothing in the index's folder."""

    def __init__(self, folders: list[Path], ingest: IngestSettings, index_path: Path) -> None:
        self.folders = folders
        self.exclude = list(ingest.exclude)
        self.ignore_file = ingest.ignore_file
        self.index_path = Path(os.path.realpath(index_path))
        self.extensions = set(supported_extensions())
        # Folders seen, so that a deleted one (no type to tell it by) still counts.
        self.known: set[Path] = set()
        for folder in folders:
            self._learn(folder)

    def changes(self, raw: set[tuple[int, str]]) -> list[tuple[str, str]]:
        """The relevant ones of watchfiles' raw (change, path) pairs, as (what, relative path)."""
        kept = []
        for change, path in sorted(raw, key=lambda c: (c[1], c[0])):
            rel = self.relevant(Change(change), Path(path))
            if rel is not None:
                kept.append((Change(change).name, rel))
        return kept

    def relevant(self, change: Change, path: Path) -> str | None:
        """The path relative to its watched folder when a run would see this change, else None."""
        folder = next((f for f in self.folders if is_within(path, f)), None)
        if folder is None or is_within(path, self.index_path):
            return None
        if path == folder:
            return "." if change == Change.deleted else None
        rel = path.relative_to(folder).as_posix()
        if rel == self.ignore_file:
            return rel
        parts = rel.split("/")
        patterns = self.exclude + _read_patterns(folder / self.ignore_file)
        if any(part.startswith(".") for part in parts) or any(
                _ignored("/".join(parts[:i]), True, patterns) for i in range(1, len(parts))):
            return None
        if change == Change.deleted:
            is_dir = path in self.known
            self.known.discard(path)
        else:
            is_dir = path.is_dir()
            if is_dir:
                self._learn(path)
        if is_dir:
            return rel if change != Change.modified and not _ignored(rel, True, patterns) else None
        return rel if path.suffix.lower() in self.extensions and not _ignored(rel, False, patterns) else None

    def _learn(self, folder: Path) -> None:
        """Remember a folder and the visible folders under it."""
        self.known.add(folder)
        for parent, dirs, _ in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            self.known.update(Path(parent, d) for d in dirs)
