"""The index's BM25 tokenizer, from its settings, and a chunk's tokens as its row stores them."""

from __future__ import annotations

from rag.config import IndexSettings
from rag.lexical import Tokenizer, serialize_tokens


def make_tokenizer(settings: IndexSettings) -> Tokenizer:
    return Tokenizer(stem=settings.bm25_stem, stopwords=None if settings.bm25_stopwords == "none" else "en",
                     chinese=settings.bm25_chinese)


def bm25_tokens(tokenizer: Tokenizer, chunk_text: str) -> str:
    """A chunk's BM25 tokens as stored with its row (of its embed_text)."""
    return serialize_tokens(tokenizer.tokenize(chunk_text))
