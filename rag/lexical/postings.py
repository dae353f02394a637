"""A segment's BM25 postings: term frequencies and chunk lengths, with nothing corpus-wide baked in.

An index made of segments (as Lucene and Tantivy have it) never rewrites a segment: a write adds a
small one with its new chunks, and a deletion records the chunk id as a tombstone. So a segment
keeps only what its own chunks say (`Postings`: tf per term and chunk, tokens per chunk), and N,
avgdl and df are computed over the live chunks of every segment when a search runs
(`rag.lexical.segmented.SegmentedBM25`). Saved as `postings.*` files in the segment's folder.
"""

from __future__ import annotations

import array
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorruptError, IndexMismatchError
from rag.idsets import held_in
from rag.lexical.files import check_columns, read_array, read_json
from rag.lexical.tokenizer import Tokenizer

FORMAT_VERSION = 1
META_FILE = "postings.json"
VOCAB_FILE = "postings.vocab.json"
IDS_FILE = "postings.ids.npy"
LENGTHS_FILE = "postings.lengths.npy"
TF_FILE = "postings.tf.npy"
ROWS_FILE = "postings.rows.npy"
INDPTR_FILE = "postings.indptr.npy"
FILES = (META_FILE, VOCAB_FILE, IDS_FILE, LENGTHS_FILE, TF_FILE, ROWS_FILE, INDPTR_FILE)

_EMPTY_ROWS = np.zeros(0, np.int32)
_EMPTY_TF = np.zeros(0, np.float32)


class Postings:
    """One segment's chunks as term frequencies by term (CSC), with nothing corpus-wide baked in.

    Row i is chunk `ids[i]` with `lengths[i]` tokens; the postings of term t are
    `rows[indptr[t]:indptr[t + 1]]` (ascending) with counts `tf[indptr[t]:indptr[t + 1]]`.
    """

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, tf: np.ndarray, rows: np.ndarray,
                 indptr: np.ndarray, vocab: dict[str, int],
                 tokenizer_settings: Mapping[str, Any] | None = None) -> None:
        self.ids = ids
        self.lengths = lengths
        self.tf = tf
        self.rows = rows
        self.indptr = indptr
        self.vocab = vocab
        # The settings of the tokenizer that made the tokens: a reader with others must not mix them.
        self.tokenizer_settings = (dict(tokenizer_settings) if tokenizer_settings is not None
                                   else Tokenizer().settings)

    def __len__(self) -> int:
        return len(self.ids)

    def term_postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, tf) of the chunks holding `term`, rows ascending; views, empty for an unknown term."""
        column = self.vocab.get(term)
        if column is None:
            return _EMPTY_ROWS, _EMPTY_TF
        start, end = int(self.indptr[column]), int(self.indptr[column + 1])
        return self.rows[start:end], self.tf[start:end]

    # -- building ------------------------------------------------------------------------

    @classmethod
    def build(cls, ids: np.ndarray, token_lists: Iterable[list[str]],
              tokenizer_settings: Mapping[str, Any] | None = None) -> "Postings":
        """Postings of `token_lists[i]` under chunk id `ids[i]`; one pass over `token_lists`.

        `tokenizer_settings` records which tokenizer made the tokens (default: `Tokenizer()`'s).
        Terms are counted with scipy (a CSR of term ids per row turned into CSC, which sums
        repeats), with the vocabulary in first-seen order so equal input gives equal files.
        """
        import scipy.sparse as sp

        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError("ids must be a one-dimensional array of chunk ids")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be unique")
        vocab: dict[str, int] = {}
        term_ids = array.array("i")
        lengths = array.array("i")
        for tokens in token_lists:
            lengths.append(len(tokens))
            term_ids.extend([vocab.setdefault(token, len(vocab)) for token in tokens])
        if len(lengths) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(lengths)} token lists")
        row_lengths = np.frombuffer(lengths, dtype=np.int32).copy() if lengths else np.zeros(0, np.int32)
        if not vocab:
            return cls(ids, row_lengths, _EMPTY_TF.copy(), _EMPTY_ROWS.copy(), np.zeros(1, np.int64), vocab,
                       tokenizer_settings)
        terms = np.frombuffer(term_ids, dtype=np.int32)
        row_starts = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(row_lengths, out=row_starts[1:])
        counts = sp.csr_matrix((np.ones(len(terms), np.float32), terms, row_starts),
                               shape=(len(ids), len(vocab))).tocsc()
        counts.sum_duplicates()
        # Copies: after summing, scipy's arrays are views into buffers sized for every token.
        return cls(ids, row_lengths, counts.data.astype(np.float32, copy=True),
                   counts.indices.astype(np.int32, copy=True), counts.indptr.astype(np.int64, copy=True),
                   vocab, tokenizer_settings)

    @classmethod
    def concat(cls, parts: Sequence["Postings"]) -> "Postings":
        """The postings of `parts` as one, rows in order: what `build` gives over all their chunks.

        A reader joins small segments this way, since each segment a query visits costs a dict
        lookup and array slices per query term, however few chunks it holds.
        """
        if not parts:
            raise ValueError("nothing to join")
        settings = parts[0].tokenizer_settings
        if any(part.tokenizer_settings != settings for part in parts):
            raise IndexMismatchError("BM25 segments tokenized with different settings cannot be joined")
        # The joint vocabulary, in first-seen order as `build` makes it; set and map operations,
        # not a Python loop per term (a reader joins tens of thousands of terms when it opens).
        vocab: dict[str, int] = {}
        joint_columns = []
        for part in parts:
            new = sorted(part.vocab.keys() - vocab.keys(), key=part.vocab.__getitem__)
            vocab.update(zip(new, range(len(vocab), len(vocab) + len(new))))
            joint = np.empty(len(part.vocab), np.int64)
            joint[np.fromiter(part.vocab.values(), np.int64, len(part.vocab))] = np.fromiter(
                map(vocab.__getitem__, part.vocab), np.int64, len(part.vocab))
            joint_columns.append(joint)
        # Each part's postings of a term go after those of the parts before it: a counting sort.
        counts = np.zeros(len(vocab), np.int64)
        for part, joint in zip(parts, joint_columns):
            counts[joint] += np.diff(part.indptr)
        indptr = np.zeros(len(vocab) + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        placed = indptr[:-1].copy()
        rows = np.empty(int(indptr[-1]), np.int32)
        tf = np.empty(int(indptr[-1]), np.float32)
        offset = 0
        for part, joint in zip(parts, joint_columns):
            lengths = np.diff(part.indptr)
            starts = placed[joint]
            placed[joint] += lengths
            at = np.arange(len(part.rows), dtype=np.int64) + np.repeat(starts - part.indptr[:-1], lengths)
            rows[at] = np.asarray(part.rows) + offset
            tf[at] = part.tf
            offset += len(part)
        return cls(np.concatenate([np.asarray(p.ids, dtype=np.int64) for p in parts]),
                   np.concatenate([np.asarray(p.lengths, dtype=np.int32) for p in parts]),
                   tf, rows, indptr, vocab, settings)

    # -- files ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write FILES into `directory` (the index store makes the write atomic and fsyncs it)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, values in ((IDS_FILE, self.ids), (LENGTHS_FILE, self.lengths), (TF_FILE, self.tf),
                             (ROWS_FILE, self.rows), (INDPTR_FILE, self.indptr)):
            np.save(directory / name, np.ascontiguousarray(values), allow_pickle=False)
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        (directory / VOCAB_FILE).write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        meta = {
            "format": FORMAT_VERSION,
            "tokenizer": self.tokenizer_settings,
            "chunks": len(self.ids),
            "terms": len(terms),
            "postings": len(self.tf),
            "tokens": int(np.sum(self.lengths, dtype=np.int64)),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, tokenizer_settings: Mapping[str, Any] | None = None,
             mmap: bool = True) -> "Postings":
        """Open a saved segment, refusing damaged files and, when given, other tokenizer settings.

        With `mmap` the postings arrays are mapped rather than copied, so that processes serving
        the same index share them through the page cache. Every posting is checked once here:
        a bad array would otherwise give wrong hits silently.
        """
        meta = read_json(directory / META_FILE, dict)
        if meta.get("format") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{directory / META_FILE}: BM25 postings format {meta.get('format')!r}, this rag reads "
                f"format {FORMAT_VERSION}; rebuild the index"
            )
        if tokenizer_settings is not None and meta.get("tokenizer") != dict(tokenizer_settings):
            raise IndexMismatchError(
                f"{directory}: the BM25 postings were tokenized with {meta.get('tokenizer')}, the settings "
                f"give {dict(tokenizer_settings)}; use those settings or re-index the documents"
            )
        if not isinstance(meta.get("tokenizer"), dict):
            raise IndexCorruptError(f"{directory / META_FILE} records no tokenizer settings; "
                                    "run `rag check`, or rebuild the index")
        terms = read_json(directory / VOCAB_FILE, list)
        mode = "r" if mmap else None
        ids = read_array(directory / IDS_FILE, np.int64, None)
        lengths = read_array(directory / LENGTHS_FILE, np.int32, None)
        # Plain arrays over the mapped files: a slice of an np.memmap costs a subclass instance,
        # several microseconds per term and segment at every query.
        tf = np.asarray(read_array(directory / TF_FILE, np.float32, mode))
        rows = np.asarray(read_array(directory / ROWS_FILE, np.int32, mode))
        indptr = np.asarray(read_array(directory / INDPTR_FILE, np.int64, mode))
        vocab = {term: i for i, term in enumerate(terms)}
        problem = (check_columns(meta, terms, vocab, ids, tf, rows, indptr, "a term count")
                   or _check_postings(meta, lengths, tf, rows, indptr))
        if problem:
            raise IndexCorruptError(f"{directory}: the BM25 postings are damaged ({problem}); "
                                    "run `rag check`, or rebuild the index")
        return cls(ids, lengths, tf, rows, indptr, vocab, meta["tokenizer"])


def _check_postings(meta: dict[str, Any], lengths: np.ndarray, tf: np.ndarray, rows: np.ndarray,
                    indptr: np.ndarray) -> str | None:
    """What `check_columns` does not see: chunk lengths, repeated postings, counts against lengths.
    `indptr` has passed `check_columns`, so it ascends."""
    if len(lengths) != meta.get("chunks") or int(np.sum(lengths, dtype=np.int64)) != meta.get("tokens"):
        return "the chunk lengths differ from the ones recorded"
    if len(lengths) and lengths.min() < 0:
        return "a chunk length is negative"
    if len(rows) > 1:
        # Within a term the rows ascend strictly: a repeated posting would count a chunk twice in df.
        falls = np.flatnonzero(np.diff(rows) <= 0) + 1
        if len(falls) and not np.all(held_in(falls, indptr)):
            return "a term lists a chunk twice or out of order"
    # Each chunk's term counts add up to its length: a damaged count or length would skew scores.
    totals = np.bincount(rows, weights=tf, minlength=len(lengths)) if len(rows) else np.zeros(len(lengths))
    if not np.array_equal(totals, lengths):
        return "the term counts disagree with the chunk lengths"
    return None
