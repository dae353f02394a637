"""Token-aware chunking with the embedding model's own tokenizer.

Text is cut into atoms at the coarsest boundary that makes each atom fit the budget
(paragraphs, then lines, then sentences in English and Chinese punctuation, then clauses,
words and at last token windows), and the atoms are packed greedily into chunks of up to
`chunk_size` tokens, the next chunk repeating the last whole sentences of the previous one
up to `chunk_overlap` tokens. Packing matters: a recursive splitter (LangChain's) emits a
short paragraph that precedes a long one as a chunk of its own, which on SciFact made the
mean chunk 104 tokens for a 200-token budget, a third more chunks to embed and weaker ones.

Every section (heading, PDF page, table) starts a new chunk. A chunk never exceeds the
model's maximum sequence length, heading prefix and special tokens included: the embedding
model would otherwise drop the end of it without a word.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Protocol

from rag.config import ChunkingSettings
from rag.records import Chunk, Document, Section

# Coarsest first; each separator stays at the end of the atom it closes.
SEPARATORS = [
    "\n\n", "\n",
    "。", "！", "？", "；", ". ", "! ", "? ", "; ",
    "，", "、", ", ", ": ",
    " ",
]
HEADING_JOINER = " > "


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...

    def count_many(self, texts: list[str]) -> list[int]: ...

    def encode_many(self, texts: list[str]) -> list[list[int]]: ...

    def offsets(self, text: str) -> list[tuple[int, int]]: ...


class HFTokenCounter:
    """Counts tokens with a Hugging Face tokenizer's fast backend, without special tokens.

    Counts on a private copy of the backend with padding and truncation off: the model's
    own tokenizer gets both switched on by sentence-transformers at its first encode, after
    which a batch would count every text as long as the longest, and any text as at most
    the model's maximum length.
    """

    def __init__(self, tokenizer: Any) -> None:
        from tokenizers import Tokenizer

        # A transformers tokenizer (the torch backend) or the fast tokenizer itself (the ONNX ones).
        backend = tokenizer if isinstance(tokenizer, Tokenizer) else (
            getattr(tokenizer, "_tokenizer", None) or getattr(tokenizer, "backend_tokenizer", None))
        if backend is not None:
            backend = Tokenizer.from_str(backend.to_str())
            backend.no_padding()
            backend.no_truncation()
            self.special_tokens = len(backend.encode("").ids)
        else:
            self.special_tokens = len(tokenizer("")["input_ids"])
        self._backend = backend
        self._tokenizer = tokenizer

    def count(self, text: str) -> int:
        if self._backend is not None:
            return len(self._backend.encode(text, add_special_tokens=False).ids)
        return len(self._tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def count_many(self, texts: list[str]) -> list[int]:
        """One call for many texts: the tokenizer's per-call overhead dominates short texts."""
        return [len(ids) for ids in self.encode_many(texts)]

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens."""
        if not texts:
            return []
        if self._backend is not None:
            return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        return list(self._tokenizer(texts, add_special_tokens=False, truncation=False, padding=False)["input_ids"])

    def offsets(self, text: str) -> list[tuple[int, int]]:
        if self._backend is not None:
            return list(self._backend.encode(text, add_special_tokens=False).offsets)
        enc = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]


class Chunker:
    """Splits Documents into Chunks that fit `max_tokens` (the model's limit less special tokens)."""

    def __init__(self, settings: ChunkingSettings, counter: TokenCounter, max_tokens: int, rows_per_chunk: int = 20):
        if max_tokens < 16:
            raise ValueError(f"max_tokens must be at least 16, got {max_tokens}")
        self.settings = settings
        self.counter = counter
        self.max_tokens = max_tokens
        self.rows_per_chunk = rows_per_chunk

    def _prefix(self, headings: tuple[str, ...]) -> tuple[str, int]:
        """The heading path to embed in front of the text, shortened from the left if too long."""
        if not self.settings.heading_prefix or not headings:
            return "", 0
        parts = list(headings)
        while parts:
            prefix = HEADING_JOINER.join(parts) + "\n"
            tokens = self.counter.count(prefix)
            if tokens <= self.max_tokens // 3:
                return prefix, tokens
            parts.pop(0)
        return "", 0

    def _fit(self, text: str, limit: int, step: int | None = None) -> list[str]:
        """Cut `text` at token boundaries so every piece has at most `limit` tokens."""
        step = step or limit
        if self.counter.count(text) <= limit:
            return [text]
        offsets = self.counter.offsets(text)
        pieces = []
        for start in range(0, len(offsets), step):
            window = offsets[start:start + step]
            piece = text[window[0][0]:window[-1][1]].strip()
            # Re-tokenizing a substring can add a token at its edges: cut that piece with a
            # smaller window (strictly smaller, so this always ends).
            if step > 1 and self.counter.count(piece) > limit:
                pieces.extend(self._fit(piece, limit, step - max(1, step // 8)))
            else:
                pieces.append(piece)
        return [p for p in pieces if p]

    def _enforce_limit(
        self, prefix: str, pieces: list[tuple[str, dict[str, Any]]]
    ) -> Iterator[tuple[str, dict[str, Any], list[int] | None]]:
        """Tokenize each chunk exactly as it will be embedded (the ids go to the encoder); re-cut
        the rare one whose atom counts did not add up (counts are not always additive across a cut)."""
        encoded = self.counter.encode_many([prefix + text for text, _ in pieces])
        for (text, extra), ids in zip(pieces, encoded):
            if len(ids) <= self.max_tokens:
                yield text, extra, ids
            else:
                room = self.max_tokens - self.counter.count(prefix) - 2
                yield from ((piece, extra, None) for piece in self._fit(text, room))

    def _atoms(self, text: str, tokens: int, budget: int, level: int = 0) -> list[tuple[str, int]]:
        """(text, tokens) pieces, each within budget, that concatenate back to `text`."""
        if tokens <= budget:
            return [(text, tokens)]
        for i in range(level, len(SEPARATORS)):
            sep = SEPARATORS[i]
            if sep not in text:
                continue
            parts = [p for p in re.split(f"(?<={re.escape(sep)})", text) if p]
            atoms: list[tuple[str, int]] = []
            for part, count in zip(parts, self.counter.count_many(parts)):
                atoms.extend(self._atoms(part, count, budget, i + 1))
            return atoms
        pieces = self._fit(text, budget)
        return [(piece + " ", count) for piece, count in zip(pieces, self.counter.count_many(pieces))]

    def _split_text(self, text: str, budget: int) -> list[str]:
        atoms = [(t, n) for t, n in self._atoms(text, self.counter.count(text), budget) if t.strip()]
        overlap = min(self.settings.chunk_overlap, budget // 2)
        chunks: list[str] = []
        start = 0
        while start < len(atoms):
            end, used = start, 0
            while end < len(atoms) and (end == start or used + atoms[end][1] <= budget):
                used += atoms[end][1]
                end += 1
            chunks.append("".join(t for t, _ in atoms[start:end]).strip())
            if end >= len(atoms):
                break
            # The next chunk repeats the trailing atoms of this one, up to `overlap` tokens.
            back, carried = end, 0
            while back - 1 > start and carried + atoms[back - 1][1] <= overlap:
                back -= 1
                carried += atoms[back][1]
            start = back
        return chunks

    def _table_chunks(self, section: Section, budget: int) -> Iterator[tuple[str, dict[str, Any]]]:
        header = section.table_header or ""
        header_tokens = self.counter.count(header) + 1
        room = budget - header_tokens
        if room < 8:  # a header so wide that rows do not fit beside it: split rows alone
            header, header_tokens, room = "", 0, budget
        group: list[str] = []
        group_tokens = 0
        first_row = 1
        for number, row in enumerate(section.table_rows, start=1):
            row_tokens = self.counter.count(row) + 1
            if group and (group_tokens + row_tokens > room or len(group) >= self.rows_per_chunk):
                yield "\n".join([header, *group]).strip(), {"rows": [first_row, number - 1]}
                group, group_tokens = [], 0
            if not group:
                first_row = number
            if row_tokens > room:
                for piece in self._split_text(row, room):
                    yield "\n".join([header, piece]).strip(), {"rows": [number, number]}
                first_row = number + 1
                continue
            group.append(row)
            group_tokens += row_tokens
        if group:
            yield "\n".join([header, *group]).strip(), {"rows": [first_row, len(section.table_rows)]}

    def chunk(self, document: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        base = {k: document.metadata[k] for k in ("source", "title") if k in document.metadata}
        for section in document.sections:
            prefix, prefix_tokens = self._prefix(section.headings)
            budget = min(self.settings.chunk_size, self.max_tokens - prefix_tokens)
            if section.table_header is not None:
                pieces = list(self._table_chunks(section, budget))
            else:
                pieces = [(text, {}) for text in self._split_text(section.text, budget)]
            for text, extra, token_ids in self._enforce_limit(prefix, pieces):
                embed_text = prefix + text
                metadata = {**base, **extra}
                if section.page is not None:
                    metadata["page"] = section.page
                if section.headings:
                    metadata["headings"] = list(section.headings)
                chunks.append(Chunk(document.doc_id, len(chunks), text, embed_text, metadata, token_ids))
        return chunks
