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

import json
import re
import unicodedata
from bisect import bisect_left
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
# Tokenizers whose tokens never cross whitespace and whose words tokenize alike wherever they stand:
# a chunk cut at whitespace then has exactly the ids of its slice of the section's ids.
_WORD_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_CHARACTER_NORMALIZERS = {"BertNormalizer", "Lowercase", "StripAccents", "NFD", "NFKD", "NFC", "NFKC"}


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...

    def count_many(self, texts: list[str]) -> list[int]: ...

    def encode_many(self, texts: list[str]) -> list[list[int]]: ...

    def offsets(self, text: str) -> list[tuple[int, int]]: ...

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]: ...

    @property
    def context_free(self) -> bool: ...


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
        self._context_free = backend is not None and _splits_words_alone(json.loads(backend.to_str()))

    @property
    def context_free(self) -> bool:
        """Whether a text cut at whitespace tokenizes as the matching slice of the whole text's ids."""
        return self._context_free

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
        return self.encode_with_offsets(text)[1]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids (no special tokens) and each token's character span in `text`."""
        if self._backend is not None:
            encoding = self._backend.encode(text, add_special_tokens=False)
            return encoding.ids, encoding.offsets
        enc = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _splits_words_alone(config: dict[str, Any]) -> bool:
    pre = config.get("pre_tokenizer") or {}
    if pre.get("type") not in _WORD_PRE_TOKENIZERS:
        return False
    normalizer = config.get("normalizer")
    steps = [] if normalizer is None else normalizer.get("normalizers", [normalizer]) \
        if normalizer.get("type") == "Sequence" else [normalizer]
    return all(step.get("type") in _CHARACTER_NORMALIZERS for step in steps)


def _is_space(char: str) -> bool:
    # What Hugging Face's pre-tokenizers split on; Python's isspace() also counts control
    # characters, which BERT's normalizer deletes, joining the words on either side.
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


class _Tokenized:
    """One section's text, tokenized once: atom counts and chunk ids are read from it."""

    def __init__(self, text: str, counter: TokenCounter) -> None:
        self.text = text
        self.ids, offsets = counter.encode_with_offsets(text)
        self.starts = [start for start, _ in offsets]
        self.context_free = counter.context_free

    def count(self, start: int, end: int) -> int:
        """Tokens that begin in text[start:end]: exact at word boundaries, close elsewhere."""
        return bisect_left(self.starts, end) - bisect_left(self.starts, start)

    def ids_of(self, start: int, end: int) -> list[int] | None:
        """text[start:end]'s own ids, where they are certainly a slice of the whole; else None."""
        text = self.text
        if not self.context_free or (start > 0 and not _is_space(text[start - 1])) \
                or (end < len(text) and not _is_space(text[end])):
            return None
        return self.ids[bisect_left(self.starts, start):bisect_left(self.starts, end)]


class Chunker:
    """Splits Documents into Chunks that fit `max_tokens` (the model's limit less special tokens)."""

    def __init__(self, settings: ChunkingSettings, counter: TokenCounter, max_tokens: int, rows_per_chunk: int = 20):
        if max_tokens < 16:
            raise ValueError(f"max_tokens must be at least 16, got {max_tokens}")
        self.settings = settings
        self.counter = counter
        self.max_tokens = max_tokens
        self.rows_per_chunk = rows_per_chunk

    def _prefix(self, headings: tuple[str, ...]) -> tuple[str, list[int]]:
        """The heading path to embed in front of the text, shortened from the left if too long."""
        if not self.settings.heading_prefix or not headings:
            return "", []
        parts = list(headings)
        while parts:
            prefix = HEADING_JOINER.join(parts) + "\n"
            (ids,) = self.counter.encode_many([prefix])
            if len(ids) <= self.max_tokens // 3:
                return prefix, ids
            parts.pop(0)
        return "", []

    def _fit(self, text: str, limit: int, step: int | None = None) -> list[tuple[int, int]]:
        """Spans of `text`, cut at token boundaries and stripped, of at most `limit` tokens each."""
        step = step or limit
        if self.counter.count(text) <= limit:
            return [_stripped(text, 0, len(text))]
        offsets = self.counter.offsets(text)
        spans = []
        for start in range(0, len(offsets), step):
            window = offsets[start:start + step]
            a, b = _stripped(text, window[0][0], window[-1][1])
            # Re-tokenizing a substring can add a token at its edges: cut that piece with a
            # smaller window (strictly smaller, so this always ends).
            if step > 1 and self.counter.count(text[a:b]) > limit:
                spans.extend((a + x, a + y) for x, y in self._fit(text[a:b], limit, step - max(1, step // 8)))
            else:
                spans.append((a, b))
        return [(a, b) for a, b in spans if b > a]

    def _enforce_limit(
        self, prefix: str, prefix_ids: list[int], pieces: list[tuple[str, dict[str, Any], list[int] | None]]
    ) -> Iterator[tuple[str, dict[str, Any], list[int] | None]]:
        """Each chunk with its ids exactly as it will be embedded (they go to the encoder): sliced
        from its section's where that is exact, tokenized here otherwise; re-cut the rare one whose
        atom counts did not add up (counts are not always additive across a cut)."""
        missing = [prefix + text for text, _, ids in pieces if ids is None]
        fresh = iter(self.counter.encode_many(missing))
        for text, extra, ids in pieces:
            ids = next(fresh) if ids is None else prefix_ids + ids
            if len(ids) <= self.max_tokens:
                yield text, extra, ids
            else:
                room = self.max_tokens - len(prefix_ids) - 2
                yield from ((text[a:b], extra, None) for a, b in self._fit(text, room))

    def _atoms(self, tokens: _Tokenized, start: int, end: int, budget: int, level: int = 0) -> list[tuple[int, int, int]]:
        """(start, end, tokens) spans of text[start:end], each within budget, in order."""
        count = tokens.count(start, end)
        if count <= budget:
            return [(start, end, count)]
        text = tokens.text[start:end]
        for i in range(level, len(SEPARATORS)):
            sep = SEPARATORS[i]
            if sep not in text:
                continue
            atoms: list[tuple[int, int, int]] = []
            at = start
            for part in re.split(f"(?<={re.escape(sep)})", text):
                if part:
                    atoms.extend(self._atoms(tokens, at, at + len(part), budget, i + 1))
                    at += len(part)
            return atoms
        spans = [(start + a, start + b) for a, b in self._fit(text, budget)]
        return [(a, b, n) for (a, b), n in zip(spans, self.counter.count_many([tokens.text[a:b] for a, b in spans]))]

    def _split_text(self, text: str, budget: int) -> list[tuple[str, list[int] | None]]:
        """Chunks of `text` with their ids where a slice of the text's ids gives them exactly."""
        tokens = _Tokenized(text, self.counter)
        atoms = [atom for atom in self._atoms(tokens, 0, len(text), budget) if text[atom[0]:atom[1]].strip()]
        overlap = min(self.settings.chunk_overlap, budget // 2)
        chunks: list[tuple[str, list[int] | None]] = []
        start = 0
        while start < len(atoms):
            end, used = start, 0
            while end < len(atoms) and (end == start or used + atoms[end][2] <= budget):
                used += atoms[end][2]
                end += 1
            a, b = _stripped(text, atoms[start][0], atoms[end - 1][1])
            chunks.append((text[a:b], tokens.ids_of(a, b)))
            if end >= len(atoms):
                break
            # The next chunk repeats the trailing atoms of this one, up to `overlap` tokens.
            back, carried = end, 0
            while back - 1 > start and carried + atoms[back - 1][2] <= overlap:
                back -= 1
                carried += atoms[back][2]
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
                for piece, _ in self._split_text(row, room):
                    yield "\n".join([header, piece]).strip(), {"rows": [number, number]}
                first_row = number + 1
                continue
            group.append(row)
            group_tokens += row_tokens
        if group:
            yield "\n".join([header, *group]).strip(), {"rows": [first_row, len(section.table_rows)]}

    def _table_pieces(self, section: Section, budget: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """The table's chunks; their `rows` the source's own row numbers where the section has them."""
        numbers = section.row_numbers
        for text, extra in self._table_chunks(section, budget):
            if len(numbers) == len(section.table_rows):
                first, last = extra["rows"]
                extra = {"rows": [numbers[first - 1], numbers[last - 1]]}
            yield text, extra

    def chunk(self, document: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        base = {k: document.metadata[k] for k in ("source", "title") if k in document.metadata}
        for section in document.sections:
            prefix, prefix_ids = self._prefix(section.headings)
            budget = min(self.settings.chunk_size, self.max_tokens - len(prefix_ids))
            if section.table_header is not None:
                pieces = [(text, extra, None) for text, extra in self._table_pieces(section, budget)]
            else:
                pieces = [(text, {}, ids) for text, ids in self._split_text(section.text, budget)]
            for text, extra, token_ids in self._enforce_limit(prefix, prefix_ids, pieces):
                embed_text = prefix + text
                metadata = {**base, **section.metadata, **extra}
                if section.page is not None:
                    metadata["page"] = section.page
                if section.headings:
                    metadata["headings"] = list(section.headings)
                chunks.append(Chunk(document.doc_id, len(chunks), text, embed_text, metadata, token_ids))
        return chunks


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    """text[start:end]'s span without its leading and trailing whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
