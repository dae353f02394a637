"""What each source's runs left behind, in `sources.sqlite` beside the index versions: every item's
version as the index holds it (so the next run fetches only what changed) and each run's
outcome (for `rag sources list`).

An item's version is written only after the run's index version is committed: a run that is
killed leaves the recorded state of the run before, and the next run reads again what it had not
committed.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from rag.errors import RagError

STATE_FILE = "sources.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (source TEXT NOT NULL, item TEXT NOT NULL, version TEXT NOT NULL,
                                  PRIMARY KEY (source, item)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (source TEXT NOT NULL, started REAL NOT NULL, finished REAL NOT NULL,
                                 ok INTEGER NOT NULL, listed INTEGER, fetched INTEGER, added INTEGER,
                                 updated INTEGER, unchanged INTEGER, deleted INTEGER, failed INTEGER,
                                 error TEXT);
CREATE INDEX IF NOT EXISTS runs_by_source ON runs(source, finished);
"""


@dataclass(frozen=True)
class RunRecord:
    source: str
    started: float
    finished: float
    ok: bool
    listed: int = 0
    fetched: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    error: str | None = None


class SourceState:
    def __init__(self, index_path: Path) -> None:
        self.path = Path(index_path) / STATE_FILE

    def _connect(self, write: bool = False) -> sqlite3.Connection:
        """Reads (every scheduler tick and metrics scrape) only open the file; a write makes it."""
        try:
            if write:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30)
            if write:
                conn.executescript(_SCHEMA)
            return conn
        except (OSError, sqlite3.Error) as exc:
            raise RagError(f"cannot open the sources' state {self.path} ({exc}); check the index folder") from None

    def versions(self, source: str) -> dict[str, str]:
        if not self.path.exists():
            return {}
        with closing(self._connect()) as conn:
            return dict(conn.execute("SELECT item, version FROM items WHERE source = ?", (source,)).fetchall())

    def finish(self, record: RunRecord, versions: dict[str, str] | None) -> None:
        """The run's outcome; with `versions` (a committed run), the items as the index now holds them."""
        with closing(self._connect(write=True)) as conn, conn:
            if versions is not None:
                conn.execute("DELETE FROM items WHERE source = ?", (record.source,))
                conn.executemany("INSERT INTO items VALUES (?, ?, ?)",
                                 ((record.source, item, version) for item, version in versions.items()))
            conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (record.source, record.started, record.finished, int(record.ok), record.listed,
                          record.fetched, record.added, record.updated, record.unchanged, record.deleted,
                          record.failed, record.error))
            conn.execute("DELETE FROM runs WHERE source = ? AND finished < ?", (record.source, time.time() - 90 * 86400))

    def last(self, source: str, ok_only: bool = False) -> RunRecord | None:
        if not self.path.exists():
            return None
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT * FROM runs WHERE source = ?" + (" AND ok = 1" if ok_only else "")
                               + " ORDER BY finished DESC LIMIT 1", (source,)).fetchone()
        return RunRecord(row[0], row[1], row[2], bool(row[3]), *row[4:11], row[11]) if row else None
