"""Chunk texts and document metadata in SQLite; chunk ids are the FAISS ids.

Ids come from AUTOINCREMENT, so an id is never reused after a delete and a stale FAISS
entry can never point at another chunk's text.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorruptError
from rag.filters import Filter, to_sql
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
    indexed_at TEXT NOT NULL,
    -- Set when the same content was already indexed under another id: the chunks are stored
    -- once, under that document, and found under both.
    content_of TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id   TEXT NOT NULL REFERENCES documents(doc_id),
    ordinal  INTEGER NOT NULL,
    text     TEXT NOT NULL,
    metadata TEXT NOT NULL,
    tokens   TEXT  -- BM25 tokens, space-separated: the BM25 index is rebuilt from them at each commit
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id, ordinal);
CREATE INDEX IF NOT EXISTS documents_by_sha ON documents(sha256);
-- Vectors still in a FAISS index that cannot remove ids in place (HNSW): skipped by every
-- search until `rag compact` rebuilds the index without them.
CREATE TABLE IF NOT EXISTS masked (id INTEGER PRIMARY KEY);
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
        columns = {row[1] for row in conn.execute("PRAGMA table_info(documents)")}
        if columns and "content_of" not in columns:  # written by rag 0.1.0 before deduplication
            conn.execute("ALTER TABLE documents ADD COLUMN content_of TEXT")
        chunk_columns = {row[1] for row in conn.execute("PRAGMA table_info(chunks)")}
        if chunk_columns and "tokens" not in chunk_columns:  # before BM25: tokenized at the next commit
            conn.execute("ALTER TABLE chunks ADD COLUMN tokens TEXT")
        conn.executescript(_SCHEMA)
        return cls(conn, path)

    def _has(self, table: str, column: str | None = None) -> bool:
        columns = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
        return bool(columns) and (column is None or column in columns)

    def close(self) -> None:
        self.conn.close()

    def commit(self) -> None:
        self.conn.commit()

    # -- documents -------------------------------------------------------------------------

    def document_sha(self, doc_id: str) -> str | None:
        row = self.conn.execute("SELECT sha256 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return row[0] if row else None

    def document_with_content(self, sha256: str) -> str | None:
        """The document that holds the chunks of this content, if any is indexed."""
        row = self.conn.execute("SELECT doc_id FROM documents WHERE sha256 = ? AND content_of IS NULL LIMIT 1",
                                (sha256,)).fetchone()
        return row[0] if row else None

    def document_sources(self) -> list[tuple[str, str]]:
        return [(d, s) for d, s in self.conn.execute("SELECT doc_id, source FROM documents ORDER BY doc_id")]

    def put_document(self, document: Document, content_of: str | None = None) -> None:
        meta = document.metadata
        extra = {k: v for k, v in meta.items() if k not in ("source", "title", "mtime", "sha256", "format")}
        self.conn.execute(
            "INSERT OR REPLACE INTO documents (doc_id, source, title, mtime, sha256, format, metadata, indexed_at,"
            " content_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (document.doc_id, meta.get("source", ""), meta.get("title"), meta.get("mtime"), meta["sha256"],
             meta.get("format"), json.dumps(extra, ensure_ascii=False), utc_now(), content_of),
        )

    def delete_document(self, doc_id: str) -> list[int]:
        """Remove a document; returns the chunk ids to remove from FAISS. When other ids share
        its content, the chunks pass to the first of them instead of being removed."""
        aliases = [r[0] for r in self.conn.execute(
            "SELECT doc_id FROM documents WHERE content_of = ? ORDER BY doc_id", (doc_id,))]
        self.conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
        if aliases:
            heir = aliases[0]
            self.conn.execute("UPDATE chunks SET doc_id = ? WHERE doc_id = ?", (heir, doc_id))
            self.conn.execute("UPDATE documents SET content_of = NULL WHERE doc_id = ?", (heir,))
            self.conn.execute("UPDATE documents SET content_of = ? WHERE content_of = ?", (heir, doc_id))
            return []
        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        self.conn.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        return ids

    # -- masked vectors --------------------------------------------------------------------

    def mask(self, ids: Iterable[int]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO masked (id) VALUES (?)", ((int(i),) for i in ids))

    def masked_ids(self) -> np.ndarray:
        if not self._has("masked"):
            return np.zeros(0, dtype=np.int64)
        return np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM masked ORDER BY id")), dtype=np.int64)

    def clear_masked(self) -> None:
        self.conn.execute("DELETE FROM masked")

    # -- filters -----------------------------------------------------------------------------

    def matching_chunk_ids(self, filters: list[Filter]) -> np.ndarray:
        """Chunk ids whose document (or a document sharing its content) and chunk match every filter."""
        where, params = to_sql(filters)
        join = "d.doc_id = c.doc_id OR d.content_of = c.doc_id" if self._has("documents", "content_of") \
            else "d.doc_id = c.doc_id"
        rows = self.conn.execute(f"SELECT DISTINCT c.id FROM chunks c JOIN documents d ON ({join}) WHERE {where}",
                                 params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def add_chunks(self, chunks: Iterable[Chunk], tokens: Iterable[str | None]) -> list[int]:
        ids = []
        for chunk, chunk_tokens in zip(chunks, tokens):
            cur = self.conn.execute(
                "INSERT INTO chunks (doc_id, ordinal, text, metadata, tokens) VALUES (?, ?, ?, ?, ?)",
                (chunk.doc_id, chunk.ordinal, chunk.text, json.dumps(chunk.metadata, ensure_ascii=False),
                 chunk_tokens),
            )
            ids.append(int(cur.lastrowid))
        return ids

    def fill_tokens(self, tokenize: Callable[[str], str], every: bool = False) -> None:
        """Store BM25 tokens for the chunks that have none (or, with `every`, for all)."""
        where = "" if every else " WHERE tokens IS NULL"
        rows = self.conn.execute(f"SELECT id, text FROM chunks{where}").fetchall()
        self.conn.executemany("UPDATE chunks SET tokens = ? WHERE id = ?", ((tokenize(t), i) for i, t in rows))

    def stored_tokens(self) -> Iterator[str]:
        """Every chunk's BM25 tokens, in id order (the order of chunk_ids)."""
        for (tokens,) in self.conn.execute("SELECT tokens FROM chunks ORDER BY id"):
            yield tokens

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
                f"SELECT c.id, c.doc_id, c.ordinal, c.text, c.metadata, d.source, d.title, d.metadata "
                f"FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.id IN ({marks})",
                batch,
            )
            for cid, doc_id, ordinal, text, metadata, source, title, doc_metadata in rows:
                # A record's own fields (department, date, ...) travel with each of its chunks.
                document = json.loads(doc_metadata)
                fields = {**{k: v for k, v in document.items() if k != "fields"}, **document.get("fields", {})}
                out[cid] = {"doc_id": doc_id, "ordinal": ordinal, "text": text,
                            "metadata": {**fields, **json.loads(metadata)}, "source": source, "title": title}
        if out and self._has("documents", "content_of"):
            holders = sorted({c["doc_id"] for c in out.values()})
            aliases: dict[str, list[str]] = {}
            for start in range(0, len(holders), 900):
                batch = holders[start:start + 900]
                for alias, holder in self.conn.execute(
                        f"SELECT doc_id, content_of FROM documents WHERE content_of IN ({','.join('?' * len(batch))})"
                        " ORDER BY doc_id", batch):
                    aliases.setdefault(holder, []).append(alias)
            for chunk in out.values():
                if chunk["doc_id"] in aliases:
                    chunk["metadata"] = {**chunk["metadata"], "also_in": aliases[chunk["doc_id"]]}
        return out

    def chunk_ids(self) -> Iterator[int]:
        for (cid,) in self.conn.execute("SELECT id FROM chunks ORDER BY id"):
            yield cid

    def counts(self) -> dict[str, int]:
        documents = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        masked = self.conn.execute("SELECT COUNT(*) FROM masked").fetchone()[0] if self._has("masked") else 0
        return {"documents": int(documents), "chunks": int(chunks), "masked": int(masked)}

    def integrity_problems(self) -> list[str]:
        problems = [row[0] for row in self.conn.execute("PRAGMA quick_check") if row[0] != "ok"]
        orphans = self.conn.execute(
            "SELECT COUNT(*) FROM chunks c LEFT JOIN documents d ON d.doc_id = c.doc_id WHERE d.doc_id IS NULL"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} chunks belong to no document")
        if self._has("documents", "content_of"):
            dangling = self.conn.execute(
                "SELECT COUNT(*) FROM documents a LEFT JOIN documents d ON d.doc_id = a.content_of "
                "WHERE a.content_of IS NOT NULL AND (d.doc_id IS NULL OR d.content_of IS NOT NULL)").fetchone()[0]
            if dangling:
                problems.append(f"{dangling} documents share the content of a document that does not hold it")
        return problems
