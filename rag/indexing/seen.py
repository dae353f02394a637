"""The document ids one run has read, and where each came from (a second read of one is a
duplicate)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile

from rag.errors import RagError


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
