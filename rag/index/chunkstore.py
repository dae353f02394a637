"""Chunk texts and document metadata in SQLite; chunk ids are the FAISS ids.

Ids come from AUTOINCREMENT, continued from segment to segment, so an id is never reused after
a delete and a stale FAISS entry can never point at another chunk's text.

Each segment of an index version has its own chunks.sqlite: the documents and chunks written
with it, and the tombstones it recorded against older segments' rows (`deleted_documents`,
`deleted_chunks`). `SegmentedChunks` reads a version's segments as one store, through temporary
views that leave the tombstoned rows out, so every query below runs on any number of segments.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorruptError
from rag.filters import Filter, exact_expression, to_sql
from rag.index.manifest import utc_now
from rag.records import (Chunk, Document, DocumentChunk, DocumentSummary, Facet, Facets, FolderFacet,
                         TimeRange)

CHUNKS_FILE = "chunks.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    -- A document is (collection, doc_id): two sources may use the same id in two collections.
    collection TEXT NOT NULL DEFAULT 'default',
    doc_id     TEXT NOT NULL,
    source     TEXT NOT NULL,
    -- Where it was read from: the real path of its file, or "stream" for records streamed in
    -- with `--jsonl`; decides which runs may replace it and which `--sync` may remove it.
    origin     TEXT,
    title      TEXT,
    mtime      REAL,
    sha256     TEXT NOT NULL,
    format     TEXT,
    metadata   TEXT NOT NULL,
    indexed_at TEXT NOT NULL,
    -- Set when the same content was already indexed under another id of the same collection:
    -- the chunks are stored once, under that document, and found under both.
    content_of TEXT,
    PRIMARY KEY (collection, doc_id)
);
CREATE TABLE IF NOT EXISTS chunks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL DEFAULT 'default',
    doc_id     TEXT NOT NULL,
    ordinal    INTEGER NOT NULL,
    text       TEXT NOT NULL,
    metadata   TEXT NOT NULL,
    tokens     TEXT  -- BM25 tokens, space-separated: the BM25 index is rebuilt from them at each commit
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(collection, doc_id, ordinal);
CREATE INDEX IF NOT EXISTS documents_by_sha ON documents(collection, sha256);
-- `rag delete ID` finds the collections holding an id: without it, a scan of every document.
CREATE INDEX IF NOT EXISTS documents_by_id ON documents(doc_id);
-- The other ids of a hit's document (search results name them): without it, every search scanned
-- every document once per hit (4 ms of a 9 ms SciFact search).
CREATE INDEX IF NOT EXISTS documents_by_content ON documents(collection, content_of) WHERE content_of IS NOT NULL;
-- Vectors still in a FAISS index that cannot remove ids in place (HNSW): skipped by every
-- search until `rag compact` rebuilds it without them.
CREATE TABLE IF NOT EXISTS masked (id INTEGER PRIMARY KEY);
-- Tombstones: rows of older segments that this segment's write deleted or replaced.
CREATE TABLE IF NOT EXISTS deleted_documents (
    segment    TEXT NOT NULL,
    collection TEXT NOT NULL,
    doc_id     TEXT NOT NULL,
    PRIMARY KEY (segment, collection, doc_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deleted_chunks (id INTEGER PRIMARY KEY);
"""
DOCUMENT_COLUMNS = ("collection, doc_id, source, origin, title, mtime, sha256, format, metadata, indexed_at, "
                    "content_of")
CHUNK_COLUMNS = "id, collection, doc_id, ordinal, text, metadata, tokens"
# SQLite attaches at most 10 databases to a connection: a version has at most this many segments.
MAX_SEGMENTS = 10

DEFAULT_COLLECTION = "default"
# Columns of the documents table, in order, as format 1 (rag 0.1, one id space) lacked them.
_V1_DOCUMENT_COLUMNS = "doc_id, source, title, mtime, sha256, format, metadata, indexed_at"


@dataclass(frozen=True)
class StoredDocument:
    """What the index holds about one document, for deciding whether a new read may replace it."""

    collection: str
    doc_id: str
    source: str
    origin: str | None
    sha256: str
    format: str | None


def _document_row(row: tuple[Any, ...]) -> DocumentSummary:
    # Not which other document holds its content: that one may lie outside the caller's filters.
    collection, doc_id, source, title, mtime, sha256, fmt, metadata, indexed_at, chunks = row
    return DocumentSummary(collection, doc_id, source, title, mtime, sha256, fmt, json.loads(metadata), indexed_at,
                           int(chunks))


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Format 1 keyed documents by doc_id alone: give each the default collection."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(documents)")}
    if not columns or "collection" in columns:
        return
    content_of = "content_of" if "content_of" in columns else "NULL"
    conn.execute("PRAGMA legacy_alter_table = ON")  # keep chunks' REFERENCES text as it is
    conn.execute("ALTER TABLE documents RENAME TO documents_v1")
    conn.execute("DROP INDEX IF EXISTS documents_by_sha")
    conn.execute("DROP INDEX IF EXISTS chunks_by_doc")
    conn.executescript(_SCHEMA.split("CREATE TABLE IF NOT EXISTS chunks")[0])
    conn.execute(f"INSERT INTO documents (collection, {_V1_DOCUMENT_COLUMNS}, content_of) "
                 f"SELECT 'default', {_V1_DOCUMENT_COLUMNS}, {content_of} FROM documents_v1")
    conn.execute("DROP TABLE documents_v1")
    chunk_columns = {row[1] for row in conn.execute("PRAGMA table_info(chunks)")}
    if "collection" not in chunk_columns:
        conn.execute("ALTER TABLE chunks ADD COLUMN collection TEXT NOT NULL DEFAULT 'default'")
    conn.execute("PRAGMA legacy_alter_table = OFF")


def _v1_views(conn: sqlite3.Connection) -> None:
    """Read a format-1 version as if it had collections (all 'default'), without writing it."""
    columns = [row[1] for row in conn.execute("PRAGMA main.table_info(documents)")]
    if not columns or "collection" in columns:
        return
    content_of = "content_of" if "content_of" in columns else "NULL AS content_of"
    conn.execute(f"CREATE TEMP VIEW documents AS SELECT 'default' AS collection, {_V1_DOCUMENT_COLUMNS}, "
                 f"NULL AS origin, {content_of} FROM main.documents")
    chunk_columns = [row[1] for row in conn.execute("PRAGMA main.table_info(chunks)")]
    tokens = "tokens" if "tokens" in chunk_columns else "NULL AS tokens"
    conn.execute("CREATE TEMP VIEW chunks AS SELECT id, 'default' AS collection, doc_id, ordinal, text, metadata, "
                 f"{tokens} FROM main.chunks")


class ChunkStore:
    # Where rows are written: the connection's own tables (for SegmentedChunks, the new
    # segment's, not the views of the same names).
    _writes = ""
    # Where documents sharing another's content are looked up; None where there are none.
    _aliases: str | None = "documents"

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
            _v1_views(conn)
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
        _migrate_v1(conn)
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

    def document(self, collection: str, doc_id: str) -> StoredDocument | None:
        row = self.conn.execute("SELECT collection, doc_id, source, origin, sha256, format FROM documents "
                                "WHERE collection = ? AND doc_id = ?", (collection, doc_id)).fetchone()
        return StoredDocument(*row) if row else None

    def collections_of(self, doc_id: str) -> list[str]:
        """The collections that hold a document with this id."""
        return sorted(r[0] for r in self.conn.execute("SELECT collection FROM documents WHERE doc_id = ?", (doc_id,)))

    def document_with_content(self, collection: str, sha256: str) -> str | None:
        """The document of the collection that holds the chunks of this content, if any."""
        row = self.conn.execute("SELECT doc_id FROM documents WHERE collection = ? AND sha256 = ? "
                                "AND content_of IS NULL LIMIT 1", (collection, sha256)).fetchone()
        return row[0] if row else None

    def documents_in(self, collection: str) -> Iterator[StoredDocument]:
        """Every document of a collection, streamed in id order."""
        rows = self.conn.execute("SELECT collection, doc_id, source, origin, sha256, format FROM documents "
                                 "WHERE collection = ? ORDER BY doc_id", (collection,))
        for row in rows:
            yield StoredDocument(*row)

    def put_document(self, document: Document, collection: str, content_of: str | None = None) -> None:
        meta = document.metadata
        extra = {k: v for k, v in meta.items() if k not in ("source", "title", "mtime", "sha256", "format")}
        self.conn.execute(
            f"INSERT OR REPLACE INTO {self._writes}documents ({DOCUMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (collection, document.doc_id, meta.get("source", ""), document.origin or None, meta.get("title"),
             meta.get("mtime"), meta["sha256"], meta.get("format"), json.dumps(extra, ensure_ascii=False),
             utc_now(), content_of),
        )

    def mask(self, ids: Iterable[int]) -> None:
        self.conn.executemany(f"INSERT OR IGNORE INTO {self._writes}masked (id) VALUES (?)", ((int(i),) for i in ids))

    def masked_ids(self) -> np.ndarray:
        if not self._has("masked"):
            return np.zeros(0, dtype=np.int64)
        return np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM masked ORDER BY id")), dtype=np.int64)

    def matching_chunk_ids(self, filters: list[Filter]) -> np.ndarray:
        """Chunk ids whose document (or a document sharing its content) and chunk match every filter."""
        where, params = to_sql(filters)
        rows = self.conn.execute(
            "SELECT DISTINCT c.id FROM chunks c JOIN documents d ON d.collection = c.collection "
            f"AND (d.doc_id = c.doc_id OR d.content_of = c.doc_id) WHERE {where}", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def add_chunks(self, chunks: Iterable[Chunk], tokens: Iterable[str | None], collection: str) -> list[int]:
        ids = []
        for chunk, chunk_tokens in zip(chunks, tokens):
            cur = self.conn.execute(
                f"INSERT INTO {self._writes}chunks (collection, doc_id, ordinal, text, metadata, tokens) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (collection, chunk.doc_id, chunk.ordinal, chunk.text, json.dumps(chunk.metadata, ensure_ascii=False),
                 chunk_tokens),
            )
            ids.append(int(cur.lastrowid))
        return ids

    def fill_tokens(self, tokenize: Callable[[str], str], every: bool = False) -> None:
        """Store BM25 tokens for the chunks that have none (or, with `every`, for all)."""
        where = "" if every else " WHERE tokens IS NULL"
        rows = self.conn.execute(f"SELECT id, text FROM {self._writes}chunks{where}").fetchall()
        self.conn.executemany(f"UPDATE {self._writes}chunks SET tokens = ? WHERE id = ?",
                              ((tokenize(t), i) for i, t in rows))

    def stored_tokens(self) -> Iterator[str]:
        """Every chunk's BM25 tokens, in id order (the order of chunk_ids)."""
        for (tokens,) in self.conn.execute("SELECT tokens FROM chunks ORDER BY id"):
            yield tokens

    # -- reads -----------------------------------------------------------------------------

    def get_chunks(self, ids: Iterable[int], filters: list[Filter] | None = None) -> dict[int, dict[str, Any]]:
        """Each chunk with the document it is shown as. Content stored once for several ids is
        shown as the first of them the filters allow (the one holding it when allowed), and
        `metadata.also_in` names the other allowed ones: a caller limited by filters never learns
        the name, source or title of a document outside them through a copy it may read."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        # Two lookups, not a join: over a version's segments both tables are views, and SQLite
        # joins two compound views far more slowly than it looks rows up in each.
        rows = []
        for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            batch = ids[start:start + 900]
            rows.extend(self.conn.execute(
                f"SELECT id, collection, doc_id, ordinal, text, metadata FROM chunks WHERE id IN ({','.join('?' * len(batch))})",
                batch))
        aliases = self._aliases_of({(collection, doc_id) for _, collection, doc_id, *_ in rows})
        named: dict[int, list[str]] = {}
        for cid, collection, doc_id, *_ in rows:
            names = [doc_id, *aliases.get((collection, doc_id), [])]
            named[cid] = self._allowed(cid, collection, names, filters) if filters and len(names) > 1 else names
        documents = self._document_fields({(collection, named[cid][0]) for cid, collection, *_ in rows if named[cid]})
        out: dict[int, dict[str, Any]] = {}
        for cid, collection, _, ordinal, text, metadata in rows:
            shown = named[cid]
            if not shown or (collection, shown[0]) not in documents:
                continue  # a chunk of no document: `rag check` reports it
            source, title, doc_metadata = documents[(collection, shown[0])]
            # A record's own fields (department, date, ...) travel with each of its chunks.
            document = json.loads(doc_metadata)
            fields = {**{k: v for k, v in document.items() if k != "fields"}, **document.get("fields", {})}
            chunk = json.loads(metadata)
            # A chunk keeps the source and title of the document it was cut from; it is shown as
            # this one (an alias, or the same document moved), so it carries this one's.
            chunk.update({k: v for k, v in (("source", source), ("title", title)) if k in chunk})
            out[cid] = {"collection": collection, "doc_id": shown[0], "ordinal": ordinal, "text": text,
                        "metadata": {**fields, **chunk, "collection": collection}, "source": source, "title": title}
            if len(shown) > 1:
                out[cid]["metadata"]["also_in"] = shown[1:]
        return out

    def _aliases_of(self, holders: set[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        """(collection, holder) -> the other ids sharing its content, sorted."""
        by_collection: dict[str, set[str]] = {}
        for collection, doc_id in holders:
            by_collection.setdefault(collection, set()).add(doc_id)
        aliases: dict[tuple[str, str], list[str]] = {}
        for collection, doc_ids in by_collection.items() if self._aliases else ():  # one query per collection
            marks = ",".join("?" * len(doc_ids))
            # No ORDER BY: SQLite would walk the primary key for its order instead of the index.
            for holder, alias in self.conn.execute(
                    f"SELECT content_of, doc_id FROM {self._aliases} WHERE collection = ? AND content_of IN ({marks})",
                    (collection, *sorted(doc_ids))):
                aliases.setdefault((collection, holder), []).append(alias)
        for also in aliases.values():
            also.sort()
        return aliases

    def _allowed(self, chunk_id: int, collection: str, names: list[str], filters: list[Filter]) -> list[str]:
        """Those of `names` (documents sharing the chunk) that match the filters with it, in order."""
        where, params = to_sql(filters)
        found = {r[0] for r in self.conn.execute(
            f"SELECT d.doc_id FROM chunks c, documents d WHERE c.id = ? AND d.collection = ? "
            f"AND d.doc_id IN ({','.join('?' * len(names))}) AND {where}", (chunk_id, collection, *names, *params))}
        return [name for name in names if name in found]

    def _document_fields(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[Any, ...]]:
        """(collection, doc_id) -> (source, title, metadata JSON)."""
        by_collection: dict[str, set[str]] = {}
        for collection, doc_id in keys:
            by_collection.setdefault(collection, set()).add(doc_id)
        documents: dict[tuple[str, str], tuple[Any, ...]] = {}
        for collection, doc_ids in by_collection.items():
            names = sorted(doc_ids)
            for start in range(0, len(names), 900):
                batch = names[start:start + 900]
                for doc_id, source, title, doc_metadata in self.conn.execute(
                        f"SELECT doc_id, source, title, metadata FROM documents WHERE collection = ? "
                        f"AND doc_id IN ({','.join('?' * len(batch))})", (collection, *batch)):
                    documents[(collection, doc_id)] = (source, title, doc_metadata)
        return documents

    # Documents matching filters: a document matches when one of its chunks (or, for a document
    # sharing another's content, one of that document's chunks) does, as in search.
    _MATCHING_DOCUMENTS = ("FROM documents d LEFT JOIN chunks c ON c.collection = d.collection "
                           "AND c.doc_id = COALESCE(d.content_of, d.doc_id) WHERE {where}")

    def list_documents(self, filters: list[Filter], offset: int, limit: int) -> tuple[int, list[DocumentSummary]]:
        """(how many documents match, one page of them in collection and id order)."""
        where, params = to_sql(filters)
        matching = self._MATCHING_DOCUMENTS.format(where=where)
        total = self.conn.execute(f"SELECT COUNT(DISTINCT d.collection || char(0) || d.doc_id) {matching}",
                                  params).fetchone()[0]
        rows = self.conn.execute(
            "SELECT d.collection, d.doc_id, d.source, d.title, d.mtime, d.sha256, d.format, d.metadata, "
            "d.indexed_at, (SELECT COUNT(*) FROM chunks n WHERE n.collection = d.collection "
            "AND n.doc_id = COALESCE(d.content_of, d.doc_id)) "
            f"{matching} GROUP BY d.collection, d.doc_id ORDER BY d.collection, d.doc_id LIMIT ? OFFSET ?",
            [*params, limit, offset])
        return int(total), [_document_row(row) for row in rows]

    def matching_documents(self, filters: list[Filter]) -> list[tuple[str, str]]:
        """(collection, doc_id) of every document matching the filters."""
        where, params = to_sql(filters)
        return [(c, d) for c, d in self.conn.execute(
            f"SELECT DISTINCT d.collection, d.doc_id {self._MATCHING_DOCUMENTS.format(where=where)} "
            "ORDER BY d.collection, d.doc_id", params)]

    def facets(self, filters: list[Filter]) -> Facets:
        """What the documents matching the filters are made of, for filter controls that always
        find something: how many documents there are per collection, per format and per top-level
        folder of their sources, each with the filter expression that selects exactly it, and the
        range of their modification times (epoch seconds, as documents list them).

        Folders are counted below the folder all the sources share: sources are often absolute
        paths, whose first component would put every document in one folder. A document lying
        directly in that shared folder, or in none (an upload, a record), counts in no folder."""
        where, params = to_sql(filters)
        rows = self.conn.execute(
            "WITH docs AS (SELECT DISTINCT d.collection, d.doc_id, d.format, d.source, d.mtime "
            f"{self._MATCHING_DOCUMENTS.format(where=where)}) "
            "SELECT 'collection', collection, COUNT(*) FROM docs GROUP BY collection "
            "UNION ALL SELECT 'format', format, COUNT(*) FROM docs WHERE format IS NOT NULL GROUP BY format "
            # rtrim(s, s's characters but '/') cuts the file name off: the source's folder, ending in '/'.
            "UNION ALL SELECT 'folder', rtrim(source, replace(source, '/', '')), COUNT(*) FROM docs GROUP BY 2 "
            "UNION ALL SELECT 'first', MIN(mtime), COUNT(*) FROM docs "
            "UNION ALL SELECT 'last', MAX(mtime), COUNT(*) FROM docs", params).fetchall()

        folders: dict[str, int] = {}
        directories = [(name[:-1].split("/"), int(n)) for kind, name, n in rows if kind == "folder" and name]
        shared = os.path.commonprefix([parts for parts, _ in directories]) if directories else []
        for parts, n in directories:
            if len(parts) > len(shared) and parts[len(shared)]:
                top = "/".join(parts[:len(shared) + 1])
                folders[top] = folders.get(top, 0) + n
        first, last = (next(value for kind, value, _ in rows if kind == end) for end in ("first", "last"))
        return Facets(
            documents=next(int(n) for kind, _, n in rows if kind == "first"),
            collections=[Facet(name, int(n), exact_expression("collection", name))
                         for kind, name, n in sorted(rows) if kind == "collection"],
            formats=[Facet(name, int(n), exact_expression("format", name))
                     for kind, name, n in sorted(rows) if kind == "format"],
            folders=[FolderFacet(top.rsplit("/", 1)[-1], n, exact_expression("source", top + "/") + "*", top)
                     for top, n in sorted(folders.items())],
            mtime=TimeRange(first, last) if first is not None else None,
        )

    def document_chunks(self, collection: str, doc_id: str) -> list[DocumentChunk]:
        """A document's chunks in order (those of the document holding its content, if shared)."""
        rows = self.conn.execute(
            "SELECT c.id, c.ordinal, c.text, c.metadata, d.source, d.title FROM documents d JOIN chunks c "
            "ON c.collection = d.collection AND c.doc_id = COALESCE(d.content_of, d.doc_id) "
            "WHERE d.collection = ? AND d.doc_id = ? ORDER BY c.ordinal, c.id", (collection, doc_id))
        out = []
        for cid, ordinal, text, metadata, source, title in rows:
            chunk = json.loads(metadata)  # this document's source and title, not the holder's
            chunk.update({k: v for k, v in (("source", source), ("title", title)) if k in chunk})
            out.append(DocumentChunk(cid, ordinal, text, chunk))
        return out

    def chunk_ids(self) -> Iterator[int]:
        for (cid,) in self.conn.execute("SELECT id FROM chunks ORDER BY id"):
            yield cid

    def counts(self) -> dict[str, int]:
        documents = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        masked = self.conn.execute("SELECT COUNT(*) FROM masked").fetchone()[0] if self._has("masked") else 0
        return {"documents": int(documents), "chunks": int(chunks), "masked": int(masked)}

    def collection_counts(self) -> dict[str, int]:
        """Documents per collection, for `rag info`."""
        return {c: int(n) for c, n in self.conn.execute(
            "SELECT collection, COUNT(*) FROM documents GROUP BY collection ORDER BY collection")}

    def integrity_problems(self) -> list[str]:
        return [row[0] for row in self.conn.execute("PRAGMA quick_check") if row[0] != "ok"] + self._row_problems()

    def _row_problems(self) -> list[str]:
        problems = []
        orphans = self.conn.execute(
            "SELECT COUNT(*) FROM chunks c LEFT JOIN documents d ON d.collection = c.collection "
            "AND d.doc_id = c.doc_id WHERE d.doc_id IS NULL"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} chunks belong to no document")
        dangling = self.conn.execute(
            "SELECT COUNT(*) FROM documents a LEFT JOIN documents d ON d.collection = a.collection "
            "AND d.doc_id = a.content_of WHERE a.content_of IS NOT NULL "
            "AND (d.doc_id IS NULL OR d.content_of IS NOT NULL)").fetchone()[0]
        if dangling:
            problems.append(f"{dangling} documents share the content of a document that does not hold it")
        return problems


# (name, table, "(columns) WHERE ...") of each index _SCHEMA makes, which joined copies repeat.
_SCHEMA_INDEXES = re.findall(r"CREATE INDEX IF NOT EXISTS (\w+) ON (\w+)(\(.*?\)(?: WHERE [^;]*)?);", _SCHEMA)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class SegmentedChunks(ChunkStore):
    """The rows of several segments as one store: `documents`, `chunks` and `masked` are
    temporary views over the segments' tables, less the rows any segment's tombstones name.

    Opened for reading, the connection's own database is in memory. Opened for writing, it is
    the new segment's chunks.sqlite: new rows go there, and a change to an older segment's row
    is a tombstone there plus, for a changed row, its new version.
    """

    _writes = "main."

    def __init__(self, conn: sqlite3.Connection, path: Path, segments: list[tuple[str, str]],
                 new_segment: str | None) -> None:
        super().__init__(conn, path)
        self.segments = segments  # (name, schema) of each attached segment, oldest first
        self.new_segment = new_segment
        # (old id, new id) of chunks copied into the new segment when their document was deleted
        # and another id sharing its content took them over; the writer copies their vectors.
        self.moved_chunks: list[tuple[int, int]] = []

    @classmethod
    def open(cls, segments: list[tuple[str, Path]], new: tuple[str, Path] | None = None,
             joined: list[list[str]] | None = None) -> "SegmentedChunks":
        """`segments`: (name, chunks.sqlite) of a version's segments, oldest first; `new`: the
        segment being written, created here when missing; `joined`: groups of segments (by name)
        whose live rows a reader copies into memory together and reads as one."""
        if len(segments) > MAX_SEGMENTS:
            raise IndexCorruptError(f"{len(segments)} segments in one version, at most {MAX_SEGMENTS} can be read; "
                                    "run `rag compact`")
        for _, path in segments:
            if not path.is_file():
                raise IndexCorruptError(f"{path} is missing; run `rag check`, or rebuild the index")
        main = str(new[1]) if new else ":memory:"
        conn = sqlite3.connect(main, uri=True, check_same_thread=new is not None)
        try:
            if new:
                conn.execute("PRAGMA journal_mode=OFF")
                conn.execute("PRAGMA synchronous=OFF")
                conn.executescript(_SCHEMA)
            attached = []
            for i, (name, path) in enumerate(segments):
                conn.execute(f"ATTACH DATABASE ? AS s{i}", (f"file:{path}?mode=ro&immutable=1",))
                attached.append((name, f"s{i}"))
            store = cls(conn, Path(main), attached, new[0] if new else None)
            store._create_views([group for group in joined or [] if len(group) > 1] if new is None else [])
        except sqlite3.DatabaseError as exc:
            conn.close()
            if new is not None:
                raise  # storage giving out (disk full, read-only): the writer says so
            raise IndexCorruptError(f"a segment of the index cannot be read ({exc}); run `rag check`, or "
                                    "rebuild the index") from None
        return store

    def _create_views(self, joined: list[list[str]]) -> None:
        conn = self.conn
        conn.execute("CREATE TEMP TABLE gone_chunks (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TEMP TABLE gone_documents (segment TEXT, collection TEXT, doc_id TEXT, "
                     "PRIMARY KEY (segment, collection, doc_id)) WITHOUT ROWID")
        for _, schema in self.segments:
            conn.execute(f"INSERT OR IGNORE INTO gone_chunks SELECT id FROM {schema}.deleted_chunks")
            conn.execute(f"INSERT OR IGNORE INTO gone_documents SELECT segment, collection, doc_id "
                         f"FROM {schema}.deleted_documents")
        documents: dict[str, str] = {}
        chunks: dict[str, str] = {}
        has_aliases: dict[str, bool] = {}
        # A writer adds tombstones as it goes; a reader's are fixed, so a segment no tombstone
        # touches (most of them) is read without the check, which otherwise costs every lookup.
        writing = self.new_segment is not None
        for name, schema in self.segments:
            gone_documents = writing or conn.execute("SELECT 1 FROM gone_documents WHERE segment = ? LIMIT 1",
                                                     (name,)).fetchone() is not None
            gone_chunks = writing or conn.execute(f"SELECT 1 FROM {schema}.chunks WHERE id IN "
                                                  "(SELECT id FROM gone_chunks) LIMIT 1").fetchone() is not None
            documents[name] = (
                f"SELECT {_quoted(name)} AS segment, {DOCUMENT_COLUMNS} FROM {schema}.documents d" + (
                    " WHERE NOT EXISTS (SELECT 1 FROM gone_documents g WHERE g.segment = "
                    f"{_quoted(name)} AND g.collection = d.collection AND g.doc_id = d.doc_id)"
                    if gone_documents else ""))
            chunks[name] = (f"SELECT {_quoted(name)} AS segment, {CHUNK_COLUMNS} FROM {schema}.chunks"
                            + (" WHERE id NOT IN (SELECT id FROM gone_chunks)" if gone_chunks else ""))
            has_aliases[name] = writing or conn.execute(
                f"SELECT 1 FROM {schema}.documents WHERE content_of IS NOT NULL LIMIT 1").fetchone() is not None
        for n, group in enumerate(joined):
            self._join(n, group, documents, chunks, has_aliases)
        if self.new_segment is not None:
            name = self.new_segment
            documents[name] = f"SELECT {_quoted(name)} AS segment, {DOCUMENT_COLUMNS} FROM main.documents"
            chunks[name] = f"SELECT {_quoted(name)} AS segment, {CHUNK_COLUMNS} FROM main.chunks"
            has_aliases[name] = True
        masked = [f"SELECT id FROM {schema}.masked" for _, schema in self.segments]
        if self.new_segment is not None:
            masked.append("SELECT id FROM main.masked")
        aliases = [sql for name, sql in documents.items() if has_aliases[name]]
        conn.execute("CREATE TEMP VIEW documents AS " + " UNION ALL ".join(documents.values()))
        conn.execute("CREATE TEMP VIEW chunks AS " + " UNION ALL ".join(chunks.values()))
        conn.execute("CREATE TEMP VIEW masked AS " + " UNION ALL ".join(masked))
        if aliases:
            conn.execute("CREATE TEMP VIEW aliases AS " + " UNION ALL ".join(aliases))
        self._aliases = "aliases" if aliases else None

    def _join(self, n: int, group: list[str], documents: dict[str, str], chunks: dict[str, str],
              has_aliases: dict[str, bool]) -> None:
        """Copy the live rows of `group`'s segments into memory as one arm of the views.

        Each arm of a view is a table of another attached database that every lookup visits:
        with ten small segments, fetching a search's hits took 0.17 ms longer than with one.
        """
        conn = self.conn
        conn.execute(f"CREATE TABLE main.documents_{n} AS " + " UNION ALL ".join(documents[g] for g in group))
        conn.execute(f"CREATE TABLE main.chunks_{n} (segment TEXT, id INTEGER PRIMARY KEY, collection TEXT, "
                     "doc_id TEXT, ordinal INTEGER, text TEXT, metadata TEXT, tokens TEXT)")
        conn.execute(f"INSERT INTO main.chunks_{n} " + " UNION ALL ".join(chunks[g] for g in group))
        # The segments' own indexes (the documents' key too), for the lookups the views serve.
        conn.execute(f"CREATE INDEX main.documents_{n}_by_key ON documents_{n}(collection, doc_id)")
        for name, table, rest in _SCHEMA_INDEXES:
            conn.execute(f"CREATE INDEX main.{name}_{n} ON {table}_{n}{rest}")
        aliases = any([has_aliases.pop(g) for g in group])
        for g in group:
            del documents[g], chunks[g]
        key = f"joined {n}"
        documents[key] = f"SELECT * FROM main.documents_{n}"
        chunks[key] = f"SELECT * FROM main.chunks_{n}"
        has_aliases[key] = aliases

    def _has(self, table: str, column: str | None = None) -> bool:
        return True  # every segment has every table: the views always exist

    def dead_ids(self) -> np.ndarray:
        """Chunk ids whose rows are tombstoned, and masked ids: vectors searches must skip."""
        rows = self.conn.execute("SELECT id FROM gone_chunks UNION SELECT id FROM masked ORDER BY 1")
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def dead_vector_count(self) -> int:
        """Vectors no live chunk owns: masked ones, and those of rows a tombstone hides."""
        count = self.conn.execute("SELECT COUNT(*) FROM masked").fetchone()[0]
        for _, schema in self.segments:
            count += self.conn.execute(f"SELECT COUNT(*) FROM {schema}.chunks WHERE id IN "
                                       "(SELECT id FROM gone_chunks)").fetchone()[0]
        return int(count)

    def integrity_problems(self) -> list[str]:
        problems = []
        for name, schema in self.segments:
            problems.extend(f"segment {name}: {row[0]}" for row in self.conn.execute(f"PRAGMA {schema}.quick_check")
                            if row[0] != "ok")
        twice = self.conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM documents GROUP BY collection, doc_id "
                                  "HAVING COUNT(*) > 1)").fetchone()[0]
        if twice:
            problems.append(f"{twice} documents are live in two segments")
        return problems + self._row_problems()

    # -- writing a new segment ------------------------------------------------------------

    def continue_ids(self, next_id: int) -> None:
        """New chunk ids start at `next_id`: ids are never reused, across segments too."""
        self.conn.execute("DELETE FROM main.sqlite_sequence WHERE name = 'chunks'")
        self.conn.execute("INSERT INTO main.sqlite_sequence (name, seq) VALUES ('chunks', ?)", (next_id - 1,))

    def next_id(self) -> int:
        row = self.conn.execute("SELECT seq FROM main.sqlite_sequence WHERE name = 'chunks'").fetchone()
        return int(row[0]) + 1 if row else 1

    def _tombstone_document(self, segment: str, collection: str, doc_id: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO main.deleted_documents (segment, collection, doc_id) VALUES (?, ?, ?)",
                          (segment, collection, doc_id))
        self.conn.execute("INSERT OR IGNORE INTO gone_documents (segment, collection, doc_id) VALUES (?, ?, ?)",
                          (segment, collection, doc_id))

    def _tombstone_chunks(self, ids: list[int]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO main.deleted_chunks (id) VALUES (?)", ((i,) for i in ids))
        self.conn.executemany("INSERT OR IGNORE INTO gone_chunks (id) VALUES (?)", ((i,) for i in ids))

    def _rewrite_documents(self, where: str, params: tuple[Any, ...], changes: dict[str, Any]) -> None:
        """Change the documents matching `where`: in place in the new segment, and as a new row
        there (the old one tombstoned) where an older segment holds them."""
        assignments = ", ".join(f"{column} = ?" for column in changes)
        self.conn.execute(f"UPDATE main.documents SET {assignments} WHERE {where}", (*changes.values(), *params))
        rows = self.conn.execute(f"SELECT segment, {DOCUMENT_COLUMNS} FROM documents WHERE {where} AND segment != ?",
                                 (*params, self.new_segment)).fetchall()
        columns = DOCUMENT_COLUMNS.split(", ")
        for segment, *values in rows:
            row = dict(zip(columns, values)) | changes
            self._tombstone_document(segment, row["collection"], row["doc_id"])
            self.conn.execute(f"INSERT INTO main.documents ({DOCUMENT_COLUMNS}) VALUES ({', '.join('?' * len(columns))})",
                              [row[c] for c in columns])

    def relocate(self, collection: str, document: Document) -> None:
        self._rewrite_documents("collection = ? AND doc_id = ?", (collection, document.doc_id),
                                {"source": document.metadata.get("source", ""), "origin": document.origin or None,
                                 "mtime": document.metadata.get("mtime")})

    def delete_document(self, collection: str, doc_id: str) -> list[int]:
        """Remove a document. Returns the ids of its chunks in the new segment, whose vectors the
        writer drops; its chunks in older segments are tombstoned. When other ids share its
        content, the chunks pass to the first of them instead (`moved_chunks` then says which
        older chunks were copied into the new segment, under which new ids)."""
        key = (collection, doc_id)
        row = self.conn.execute("SELECT segment FROM documents WHERE collection = ? AND doc_id = ?", key).fetchone()
        if row is None:
            return []
        # Sorted here: with ORDER BY, SQLite walks every document of the collection in key order.
        aliases = sorted(r[0] for r in self.conn.execute(
            "SELECT doc_id FROM documents WHERE collection = ? AND content_of = ?", key))
        if row[0] == self.new_segment:
            self.conn.execute("DELETE FROM main.documents WHERE collection = ? AND doc_id = ?", key)
        else:
            self._tombstone_document(row[0], collection, doc_id)
        if aliases:
            heir = aliases[0]
            self._rewrite_documents("collection = ? AND doc_id = ?", (collection, heir), {"content_of": None})
            self._rewrite_documents("collection = ? AND content_of = ?", key, {"content_of": heir})
            self.conn.execute("UPDATE main.chunks SET doc_id = ? WHERE collection = ? AND doc_id = ?", (heir, *key))
            older = self.conn.execute(f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE collection = ? AND doc_id = ? "
                                      "AND segment != ? ORDER BY id", (*key, self.new_segment)).fetchall()
            self._tombstone_chunks([r[0] for r in older])
            for old_id, coll, _, ordinal, text, metadata, tokens in older:
                cur = self.conn.execute("INSERT INTO main.chunks (collection, doc_id, ordinal, text, metadata, tokens) "
                                        "VALUES (?, ?, ?, ?, ?, ?)", (coll, heir, ordinal, text, metadata, tokens))
                self.moved_chunks.append((int(old_id), int(cur.lastrowid)))
            return []
        ids = [r[0] for r in self.conn.execute("SELECT id FROM main.chunks WHERE collection = ? AND doc_id = ?", key)]
        self.conn.execute("DELETE FROM main.chunks WHERE collection = ? AND doc_id = ?", key)
        self._tombstone_chunks([r[0] for r in self.conn.execute(
            "SELECT id FROM chunks WHERE collection = ? AND doc_id = ? AND segment != ?", (*key, self.new_segment))])
        return ids

    def written(self) -> dict[str, int]:
        """What the new segment adds and tombstones: rows of each kind, for the version's counts
        without counting every segment's rows again."""
        return {f"{what}.{table}": int(self.conn.execute(f"SELECT COUNT(*) FROM main.{prefix}{table}").fetchone()[0])
                for what, prefix in (("added", ""), ("deleted", "deleted_")) for table in ("documents", "chunks")} | {
            "masked": int(self.conn.execute("SELECT COUNT(*) FROM main.masked").fetchone()[0])}

    def new_rows(self) -> tuple[np.ndarray, Iterator[str]]:
        """The new segment's chunk ids, ascending, and their stored BM25 tokens in that order."""
        ids = np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM main.chunks ORDER BY id")), dtype=np.int64)
        return ids, (r[0] for r in self.conn.execute("SELECT tokens FROM main.chunks ORDER BY id"))
