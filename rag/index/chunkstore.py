"""Chunk texts and document metadata in SQLite; chunk ids are the FAISS ids.

Ids come from AUTOINCREMENT, so an id is never reused after a delete and a stale FAISS
entry can never point at another chunk's text.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rag.errors import IndexCorruptError
from rag.index.manifest import utc_now
from rag.records import Chunk, Document

CHUNKS_FILE = "chunks.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id     TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    title      TEXT,
    mtime      REAL,
    sha256     TEXT NOT NULL,
    format     TEXT,
    metadata   TEXT NOT NULL,
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id   TEXT NOT NULL REFERENCES documents(doc_id),
    ordinal  INTEGER NOT NULL,
    text     TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id, ordinal);
"""


class ChunkStore:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open_readonly(cls, path: Path) -> "ChunkStore":
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing; run `rag check` or rebuild the index")
        # immutable=1: committed versions are never written again, so SQLite may skip locking.
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        try:
            conn.execute("SELECT 1 FROM chunks LIMIT 1")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise IndexCorruptError(f"{path} cannot be read ({exc}); rebuild the index") from None
        return cls(conn, path)

    @classmethod
    def open_staging(cls, path: Path, copy_from: Path | None) -> "ChunkStore":
        """A writable copy for a new version; durability comes from the fsync at commit."""
        conn = sqlite3.connect(str(path))
        if copy_from is not None:
            source = sqlite3.connect(f"file:{copy_from}?mode=ro&immutable=1", uri=True)
            try:
                source.backup(conn)
            finally:
                source.close()
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(_SCHEMA)
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    def commit(self) -> None:
        self.conn.commit()

    # -- documents -------------------------------------------------------------------------

    def document_sha(self, doc_id: str) -> str | None:
        row = self.conn.execute("SELECT sha256 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return row[0] if row else None

    def put_document(self, document: Document) -> None:
        meta = document.metadata
        extra = {k: v for k, v in meta.items() if k not in ("source", "title", "mtime", "sha256", "format")}
        self.conn.execute(
            "INSERT OR REPLACE INTO documents (doc_id, source, title, mtime, sha256, format, metadata, indexed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (document.doc_id, meta.get("source", ""), meta.get("title"), meta.get("mtime"), meta["sha256"],
             meta.get("format"), json.dumps(extra, ensure_ascii=False), utc_now()),
        )

    def delete_document(self, doc_id: str) -> list[int]:
        """Remove a document and its chunks; returns the chunk ids to remove from FAISS."""
        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        self.conn.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        self.conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
        return ids

    def add_chunks(self, chunks: Iterable[Chunk]) -> list[int]:
        ids = []
        for chunk in chunks:
            cur = self.conn.execute(
                "INSERT INTO chunks (doc_id, ordinal, text, metadata) VALUES (?, ?, ?, ?)",
                (chunk.doc_id, chunk.ordinal, chunk.text, json.dumps(chunk.metadata, ensure_ascii=False)),
            )
            ids.append(int(cur.lastrowid))
        return ids

    # -- reads -----------------------------------------------------------------------------

    def get_chunks(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        out: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            batch = ids[start:start + 900]
            marks = ",".join("?" * len(batch))
            rows = self.conn.execute(
                f"SELECT c.id, c.doc_id, c.ordinal, c.text, c.metadata, d.source, d.title "
                f"FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.id IN ({marks})",
                batch,
            )
            for cid, doc_id, ordinal, text, metadata, source, title in rows:
                out[cid] = {"doc_id": doc_id, "ordinal": ordinal, "text": text,
                            "metadata": json.loads(metadata), "source": source, "title": title}
        return out

    def chunk_ids(self) -> Iterator[int]:
        for (cid,) in self.conn.execute("SELECT id FROM chunks ORDER BY id"):
            yield cid

    def counts(self) -> dict[str, int]:
        documents = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return {"documents": int(documents), "chunks": int(chunks)}

    def integrity_problems(self) -> list[str]:
        problems = [row[0] for row in self.conn.execute("PRAGMA quick_check") if row[0] != "ok"]
        orphans = self.conn.execute(
            "SELECT COUNT(*) FROM chunks c LEFT JOIN documents d ON d.doc_id = c.doc_id WHERE d.doc_id IS NULL"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} chunks belong to no document")
        return problems
