"""The service's own SQLite files that hold personal data (feedback, the audit log): made
readable by their owner only before anything is written, versioned, and opened read-only to read."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from rag.errors import RagError


def open_private(path: Path, create: bool, schema: str, version: int, what: str, setting: str) -> sqlite3.Connection:
    """A connection to `path` (created with mode 0600 and `schema` when `create`, else read-only);
    a RagError naming `what` and the `setting` that moves it when it cannot be opened, or when a
    newer rag wrote it."""
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # private before anything is written to it
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
        else:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=10)
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > version:
            conn.close()
            raise RagError(f"{what} {path} was written by a newer rag (format {found}); upgrade rag to read it")
        if create:
            conn.executescript(schema)
        return conn
    except (OSError, sqlite3.Error) as exc:
        raise RagError(f"cannot open {what} {path} ({exc}); check the folder and its permissions, "
                       f"or set {setting}") from None
