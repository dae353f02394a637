"""Chunk texts and document metadata in SQLite; chunk ids are the FAISS ids.

Ids come from AUTOINCREMENT, continued from segment to segment, so an id is never reused after
a delete and a stale FAISS entry can never point at another chunk's text.

A `ChunkStore` is one connection and what reads it: `rows` (lookups, writes, hits), `catalog`
(listings, facets, counts) and, over a version's segments, `views` (rag.index.views), which
present every segment's tables as one, less what tombstones removed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.index.catalog import Catalog
from rag.index.rows import Rows
from rag.index.schema import create_tables


class Views(Protocol):
    """What a store over a version's segments knows beyond its rows (rag.index.views.SegmentViews)."""

    new_segment: str | None

    def dead_ids(self) -> np.ndarray: ...

    def dead_vector_count(self) -> int: ...

    def integrity_problems(self) -> list[str]: ...


class ChunkStore:
    def __init__(self, conn: sqlite3.Connection, path: Path, rows: Rows, views: Views | None = None) -> None:
        self.conn = conn
        self.path = path
        self.rows = rows
        self.catalog = Catalog(conn)
        self.views = views

    @classmethod
    def create(cls, path: Path) -> "ChunkStore":
        """A new single-file store (its tables made), written without a journal: durability
        comes from the fsync of the segment it becomes."""
        conn = sqlite3.connect(str(path))
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        create_tables(conn)
        return cls(conn, path, Rows(conn))

    def dead_ids(self) -> np.ndarray:
        """Vectors searches must skip: tombstoned rows' and masked ones, ascending."""
        if self.views is not None:
            return self.views.dead_ids()
        if not self.conn.execute("PRAGMA table_info(masked)").fetchall():  # format 1
            return np.zeros(0, dtype=np.int64)
        return np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM masked ORDER BY id")), dtype=np.int64)

    def integrity_problems(self) -> list[str]:
        if self.views is not None:
            own = self.views.integrity_problems()
        else:
            own = [row[0] for row in self.conn.execute("PRAGMA quick_check") if row[0] != "ok"]
        return own + self.catalog.row_problems()

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()
