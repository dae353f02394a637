"""Where Postings and SegmentedBM25 were imported from before the package was split (rag.lexical.postings, rag.lexical.segmented)."""

from rag.lexical.postings import FILES, Postings
from rag.lexical.segmented import SegmentedBM25

__all__ = ["FILES", "Postings", "SegmentedBM25"]
