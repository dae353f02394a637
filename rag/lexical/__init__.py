"""Lexical search: language-aware tokens and BM25 over chunk ids.

Modules, each importing only those above it: `tokenizer` (text to tokens), `scoring` (the BM25
formulas), `files` (reading stored arrays), `hits` (top-k selection), `postings` (a segment's term
counts), `segmented` (`SegmentedBM25`, search over a version's segments), `bm25` (`BM25Index`,
the format 2 index).
"""

from rag.lexical.bm25 import BM25Index
from rag.lexical.postings import Postings
from rag.lexical.segmented import SegmentedBM25
from rag.lexical.tokenizer import Tokenizer, deserialize_tokens, serialize_tokens

__all__ = ["BM25Index", "Postings", "SegmentedBM25", "Tokenizer", "deserialize_tokens", "serialize_tokens"]
