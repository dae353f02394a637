"""The tables of a segment's chunks.sqlite (and of a format-2 version's): documents, chunks, the
vectors masked in an index that cannot remove them, and the tombstones a write records against
older segments' rows. Every connection that reads a version names them the same way, as tables
or as views over several segments (rag.index.views)."""

from __future__ import annotations

import re
import sqlite3

CHUNKS_FILE = "chunks.sqlite"
DEFAULT_COLLECTION = "default"

SCHEMA = """
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


# (name, table, "(columns) WHERE ...") of each index SCHEMA makes, which joined copies repeat.
SCHEMA_INDEXES = re.findall(r"CREATE INDEX IF NOT EXISTS (\w+) ON (\w+)(\(.*?\)(?: WHERE [^;]*)?);", SCHEMA)


def create_tables(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def quoted(text: str) -> str:
    """A SQL string literal (for names built into view definitions, which take no parameters)."""
    return "'" + text.replace("'", "''") + "'"
