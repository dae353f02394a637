"""A persistent index: FAISS vectors, SQLite chunks and a manifest, swapped in atomically."""

from rag.index.manifest import FORMAT_VERSION, Manifest
from rag.index.store import IndexReader, IndexStore, IndexWriter

__all__ = ["FORMAT_VERSION", "IndexReader", "IndexStore", "IndexWriter", "Manifest"]
