"""Lexical search: language-aware tokens and a BM25 index over chunk ids."""

from rag.lexical.bm25 import BM25Index
from rag.lexical.tokenizer import Tokenizer, deserialize_tokens, serialize_tokens

__all__ = ["BM25Index", "Tokenizer", "deserialize_tokens", "serialize_tokens"]
