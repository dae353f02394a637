"""A persistent index: FAISS vectors, SQLite chunks and BM25 postings in immutable segments,
versions swapped in atomically (rag.index.store is the front)."""

from rag.index.manifest import FORMAT_VERSION, Manifest
from rag.index.reader import IndexReader
from rag.index.store import IndexStore
from rag.index.writer import IndexWriter

__all__ = ["FORMAT_VERSION", "IndexReader", "IndexStore", "IndexWriter", "Manifest"]
