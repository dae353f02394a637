"""Indexes written before segments (formats 1 and 2): read as they are, rewritten by the next write.

A format-2 version folder holds chunks.sqlite, vectors.faiss and the BM25 index files itself; a
format-1 one (rag 0.1) also lacks collections. Readers see them through views that add what is
missing; the next write copies their rows into its new segment, bringing the tables up to date
with the ordered steps of UPGRADES, and from then on the index is segmented.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rag.errors import IndexCorruptError
from rag.index.chunkstore import ChunkStore
from rag.index.manifest import Manifest
from rag.index.rows import Rows
from rag.index.schema import CHUNKS_FILE, SCHEMA, create_tables
from rag.index.segments import Segment, version_problems
from rag.index.vectors import VECTORS_FILE, VectorIndex
from rag.lexical import BM25Index, Tokenizer
from rag.lexical.bm25 import FILES as BM25_FILES

# Columns of the documents table, in order, as format 1 (rag 0.1, one id space) had them.
_V1_DOCUMENT_COLUMNS = "doc_id, source, title, mtime, sha256, format, metadata, indexed_at"


def _columns(conn: sqlite3.Connection, table: str, schema: str = "main") -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA {schema}.table_info({table})")}


def _add_content_of(conn: sqlite3.Connection) -> None:
    """rag 0.1.0 before deduplication: documents had no content_of."""
    columns = _columns(conn, "documents")
    if columns and "content_of" not in columns:
        conn.execute("ALTER TABLE documents ADD COLUMN content_of TEXT")


def _add_tokens(conn: sqlite3.Connection) -> None:
    """Before BM25: chunks had no tokens (they are made at the next commit)."""
    columns = _columns(conn, "chunks")
    if columns and "tokens" not in columns:
        conn.execute("ALTER TABLE chunks ADD COLUMN tokens TEXT")


def _add_collections(conn: sqlite3.Connection) -> None:
    """Format 1 keyed documents by doc_id alone: each goes to the default collection."""
    columns = _columns(conn, "documents")
    if not columns or "collection" in columns:
        return
    conn.execute("PRAGMA legacy_alter_table = ON")  # keep chunks' REFERENCES text as it is
    conn.execute("ALTER TABLE documents RENAME TO documents_v1")
    conn.execute("DROP INDEX IF EXISTS documents_by_sha")
    conn.execute("DROP INDEX IF EXISTS chunks_by_doc")
    conn.executescript(SCHEMA.split("CREATE TABLE IF NOT EXISTS chunks")[0])
    conn.execute(f"INSERT INTO documents (collection, {_V1_DOCUMENT_COLUMNS}, content_of) "
                 f"SELECT 'default', {_V1_DOCUMENT_COLUMNS}, content_of FROM documents_v1")
    conn.execute("DROP TABLE documents_v1")
    if "collection" not in _columns(conn, "chunks"):
        conn.execute("ALTER TABLE chunks ADD COLUMN collection TEXT NOT NULL DEFAULT 'default'")
    conn.execute("PRAGMA legacy_alter_table = OFF")


# In order; each step does nothing where its change is already there. Then the tables and
# indexes of today's schema are made (masked, tombstones).
UPGRADES: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("content_of", _add_content_of),
    ("tokens", _add_tokens),
    ("collections", _add_collections),
]


def upgrade_rows(conn: sqlite3.Connection) -> None:
    for _, step in UPGRADES:
        step(conn)
    create_tables(conn)


def copy_rows(source: Path, target: Path) -> None:
    """A format-1 or -2 version's chunks.sqlite copied to `target` and brought up to date."""
    conn = sqlite3.connect(str(target))
    try:
        original = sqlite3.connect(f"file:{source}?mode=ro&immutable=1", uri=True)
        try:
            original.backup(conn)
        finally:
            original.close()
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        upgrade_rows(conn)
        conn.commit()
    finally:
        conn.close()


def _format1_views(conn: sqlite3.Connection) -> None:
    """Read a format-1 version as if it had collections (all 'default'), without writing it."""
    columns = _columns(conn, "documents")
    if not columns or "collection" in columns:
        return
    content_of = "content_of" if "content_of" in columns else "NULL AS content_of"
    conn.execute(f"CREATE TEMP VIEW documents AS SELECT 'default' AS collection, {_V1_DOCUMENT_COLUMNS}, "
                 f"NULL AS origin, {content_of} FROM main.documents")
    tokens = "tokens" if "tokens" in _columns(conn, "chunks") else "NULL AS tokens"
    conn.execute("CREATE TEMP VIEW chunks AS SELECT id, 'default' AS collection, doc_id, ordinal, text, metadata, "
                 f"{tokens} FROM main.chunks")


def open_rows(path: Path) -> ChunkStore:
    """A format-1 or -2 version's rows, read-only."""
    if not path.is_file():
        raise IndexCorruptError(f"{path} is missing; run `rag check` or rebuild the index")
    # immutable=1: committed versions are never written again, so SQLite may skip locking.
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    try:
        _format1_views(conn)
        conn.execute("SELECT 1 FROM chunks LIMIT 1")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise IndexCorruptError(f"{path} cannot be read ({exc}); rebuild the index") from None
    return ChunkStore(conn, path, Rows(conn))


class LegacyVersion:
    """What a reader needs of a format-1 or -2 version: its rows, one segment of vectors, and its
    BM25 index (None for an index written before BM25 existed, until its next write)."""

    def __init__(self, directory: Path, factory: str, use_gpu: bool, tokenizer: Tokenizer) -> None:
        self.chunks = open_rows(directory / CHUNKS_FILE)
        vectors = VectorIndex.load(directory / VECTORS_FILE, factory, use_gpu)
        self.segment = Segment("legacy", directory, vectors, None, np.sort(vectors.contains_ids()))
        self.lexical = BM25Index.load(directory, tokenizer) if (directory / BM25_FILES[0]).is_file() else None


def load_vectors(directory: Path, manifest: Manifest, factory: str, use_gpu: bool) -> VectorIndex:
    """A format-1 or -2 version's vectors, for the write that rewrites it as a segment; refused
    when they disagree with its manifest."""
    vectors = VectorIndex.load(directory / VECTORS_FILE, factory, use_gpu)
    problems = version_problems(manifest, [Segment("legacy", Path(), vectors, None, np.zeros(0, np.int64))])
    if problems:
        raise IndexCorruptError(f"{directory}: {'; '.join(problems)}; nothing was written. Run `rag check`, "
                                "and rebuild the index if it confirms the problem")
    return vectors
