"""A BM25 index over chunk ids, scored by bm25s, saved as plain .npy arrays and JSON.

The score matrix is built here with numpy and scipy rather than by `bm25s.BM25.index`, which
counts terms document by document in Python: the store rebuilds the matrix from stored token
lists at every commit, and this path is about twice as fast (and gives the same matrix,
with a vocabulary in first-seen order instead of set order, so equal input gives equal files).
Scores come from bm25s (`BM25.get_scores`), with a metadata filter applied as its `weight_mask`
inside the scoring, so a filter that admits 1% of the chunks still yields k hits when k exist.

Only the methods whose score is a sum over the query terms a chunk contains are offered
(lucene, robertson, atire): a score above zero then means "shares a term with the query", so a
filtered-out or unrelated chunk is never returned. BM25L and BM25+ give every chunk a score.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ConfigError, IndexCorruptError, IndexMismatchError
from rag.lexical.tokenizer import Tokenizer

FORMAT_VERSION = 1
META_FILE = "bm25.json"
VOCAB_FILE = "bm25.vocab.json"
IDS_FILE = "bm25.ids.npy"
DATA_FILE = "bm25.data.npy"
INDICES_FILE = "bm25.indices.npy"
INDPTR_FILE = "bm25.indptr.npy"
FILES = (META_FILE, VOCAB_FILE, IDS_FILE, DATA_FILE, INDICES_FILE, INDPTR_FILE)

METHODS = ("lucene", "robertson", "atire")

Hits = tuple[np.ndarray, np.ndarray]


def check_parameters(method: str, k1: float, b: float) -> None:
    """Refuse a BM25 variant or parameter that would score wrongly, naming it."""
    if method not in METHODS:
        raise ConfigError(f"BM25 method must be one of {', '.join(METHODS)}, not {method!r}")
    if not k1 > 0:
        raise ConfigError(f"BM25 k1 must be above 0, not {k1}")
    if not 0 <= b <= 1:
        raise ConfigError(f"BM25 b must be between 0 and 1, not {b}")


class BM25Index:
    """Chunk ids and their BM25 term scores; `build` replaces the contents, `search` reads them."""

    def __init__(self, tokenizer: Tokenizer | None = None, method: str = "lucene",
                 k1: float = 1.5, b: float = 0.75) -> None:
        check_parameters(method, k1, b)
        self.tokenizer = tokenizer or Tokenizer()
        self.method = method
        self.k1 = float(k1)
        self.b = float(b)
        self._ids = np.zeros(0, dtype=np.int64)
        self._id_order = np.zeros(0, dtype=np.int64)
        self._sorted_ids = np.zeros(0, dtype=np.int64)
        self._vocab: dict[str, int] = {}
        self._matrix: tuple[np.ndarray, np.ndarray, np.ndarray] = _empty_matrix()
        self._retriever: Any = None

    @property
    def settings(self) -> dict[str, Any]:
        return {"method": self.method, "k1": self.k1, "b": self.b}

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    # -- building ------------------------------------------------------------------------

    def build(self, ids: np.ndarray, token_lists: Iterable[list[str]]) -> None:
        """Index `token_lists[i]` under chunk id `ids[i]`; one pass over `token_lists`."""
        from rag.lexical.segments import Postings

        postings = Postings.build(ids, token_lists, self.tokenizer.settings)
        self._set(postings.ids, postings.vocab, self._score_matrix(postings))

    def _score_matrix(self, postings: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BM25 weight of each (term, chunk) pair as a CSC matrix, chunks as rows (bm25s's layout),
        from the term counts. The arithmetic works in place in float32: at 200,000 chunks the
        float64 temporaries were most of the indexing run's peak memory."""
        if not postings.vocab:
            return _empty_matrix()
        n_docs, doc_lengths = len(postings.ids), postings.lengths
        tf, indices, indptr = postings.tf, postings.rows, postings.indptr
        df = np.diff(indptr).astype(np.float64)
        if self.method == "lucene":
            idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        elif self.method == "robertson":
            idf = np.log(np.maximum(1.0, (n_docs - df + 0.5) / (df + 0.5)))
        else:
            idf = np.log(n_docs / df)
        length_norm = (self.k1 * (1 - self.b + self.b * doc_lengths / doc_lengths.mean())).astype(np.float32)
        denominator = length_norm[indices]
        denominator += tf
        if self.method == "atire":
            tf *= self.k1 + 1
        np.divide(tf, denominator, out=tf)
        del denominator
        tf *= np.repeat(idf.astype(np.float32), np.diff(indptr))
        return tf, indices, indptr

    def _set(self, ids: np.ndarray, vocab: dict[str, int],
             matrix: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self._ids = ids
        self._id_order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._id_order]
        self._vocab = vocab
        self._matrix = matrix
        self._retriever = None
        if len(ids) and vocab:
            data, indices, indptr = matrix
            import bm25s

            # The attributes bm25s.BM25.load sets from its own files; the arrays are its CSC layout.
            retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method, backend="numpy")
            retriever.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": len(ids)}
            retriever.vocab_dict = vocab
            retriever.nonoccurrence_array = None
            self._retriever = retriever

    # -- searching -----------------------------------------------------------------------

    def search(self, query: str, k: int, allowed: Collection[int] | np.ndarray | None = None) -> Hits:
        """The k best chunks with a score above zero, best first, as (chunk ids, scores).

        `allowed` holds the chunk ids a metadata filter admits; the others score zero.
        """
        return self.search_many([query], k, allowed)[0]

    def search_many(self, queries: Sequence[str], k: int,
                    allowed: Collection[int] | np.ndarray | None = None) -> list[Hits]:
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        if self._retriever is None:
            return [_no_hits() for _ in queries]
        mask = None
        if allowed is not None:
            mask = np.zeros(len(self._ids), dtype=np.float32)
            mask[self._positions(_id_array(allowed))] = 1.0
        return [self._top(self.tokenizer.tokenize(query), k, mask) for query in queries]

    def _top(self, tokens: list[str], k: int, mask: np.ndarray | None) -> Hits:
        known = [token for token in tokens if token in self._vocab]
        if not known:
            return _no_hits()
        scores = self._retriever.get_scores(known, weight_mask=mask)
        # Top k among the chunks that matched: cheaper than partitioning every score (most are
        # zero, all but 1% under a narrow filter) and ties go to the earlier chunk.
        hits = np.flatnonzero(scores > 0)
        if len(hits) > k:
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        hits = hits[np.lexsort((hits, -scores[hits]))]
        return self._ids[hits], scores[hits]

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of those of `ids` that are indexed (binary search, not a scan per query)."""
        at = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        return self._id_order[at[self._sorted_ids[at] == ids]]

    # -- files ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write FILES into `directory` (which the index store makes atomic and fsyncs)."""
        directory.mkdir(parents=True, exist_ok=True)
        data, indices, indptr = self._matrix
        terms = sorted(self._vocab, key=self._vocab.__getitem__)
        for name, values in ((IDS_FILE, self._ids), (DATA_FILE, data), (INDICES_FILE, indices),
                             (INDPTR_FILE, indptr)):
            np.save(directory / name, np.ascontiguousarray(values), allow_pickle=False)
        (directory / VOCAB_FILE).write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        meta = {
            "format": FORMAT_VERSION,
            "tokenizer": self.tokenizer.settings,
            "bm25": self.settings,
            "chunks": len(self._ids),
            "terms": len(terms),
            "postings": len(data),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, tokenizer: Tokenizer | None = None, method: str | None = None,
             k1: float | None = None, b: float | None = None, mmap: bool = True) -> "BM25Index":
        """Open a saved index, refusing one saved with other settings or with damaged files.

        `method`, `k1` and `b` left out are taken as saved: the weights are already in the score
        arrays, so a reader need not know them. With `mmap` the score arrays are mapped rather than
        copied, so that processes serving the same index share them through the page cache.
        """
        meta = _read_json(directory / META_FILE, dict)
        saved = meta.get("bm25") if isinstance(meta.get("bm25"), dict) else {}
        index = cls(tokenizer, method or saved.get("method", "lucene"),
                    k1 if k1 is not None else saved.get("k1", 1.5), b if b is not None else saved.get("b", 0.75))
        if meta.get("format") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{directory / META_FILE}: BM25 index format {meta.get('format')!r}, this rag reads "
                f"format {FORMAT_VERSION}; rebuild the index"
            )
        if meta.get("tokenizer") != index.tokenizer.settings:
            raise IndexMismatchError(
                f"{directory}: the BM25 index was tokenized with {meta.get('tokenizer')}, the settings "
                f"give {index.tokenizer.settings}; use those settings or re-index the documents"
            )
        if meta.get("bm25") != index.settings:
            raise IndexMismatchError(
                f"{directory}: the BM25 index was built with {meta.get('bm25')}, the settings give "
                f"{index.settings}; use those settings or rebuild the BM25 index"
            )
        terms = _read_json(directory / VOCAB_FILE, list)
        mode = "r" if mmap else None
        ids = _read_array(directory / IDS_FILE, np.int64, None)
        data = _read_array(directory / DATA_FILE, np.float32, mode)
        indices = _read_array(directory / INDICES_FILE, np.int32, mode)
        indptr = _read_array(directory / INDPTR_FILE, np.int64, mode)
        vocab = {term: i for i, term in enumerate(terms)}
        problem = _check(meta, terms, vocab, ids, data, indices, indptr)
        if problem:
            raise IndexCorruptError(f"{directory}: the BM25 index is damaged ({problem}); rebuild the index")
        index._set(ids, vocab, (data, indices, indptr))
        return index


def _empty_matrix() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int64)


def _no_hits() -> Hits:
    return np.zeros(0, np.int64), np.zeros(0, np.float32)


def _id_array(ids: Collection[int] | np.ndarray) -> np.ndarray:
    if isinstance(ids, np.ndarray):
        return ids.astype(np.int64, copy=False).ravel()
    return np.fromiter(ids, dtype=np.int64, count=len(ids))


def _read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing; rebuild the index") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"{path} cannot be read ({exc}); rebuild the index") from None
    if not isinstance(value, kind):
        raise IndexCorruptError(f"{path} does not hold a JSON {kind.__name__}; rebuild the index")
    return value


def _read_array(path: Path, dtype: type, mmap_mode: str | None) -> np.ndarray:
    try:
        values = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing; rebuild the index") from None
    except (OSError, ValueError, EOFError) as exc:
        raise IndexCorruptError(f"{path} cannot be read ({exc}); rebuild the index") from None
    if values.dtype != dtype or values.ndim != 1:
        raise IndexCorruptError(
            f"{path} holds {values.dtype} of shape {values.shape}, not a {np.dtype(dtype)} vector; rebuild the index"
        )
    return values


def _check(meta: dict[str, Any], terms: list[Any], vocab: dict[str, int], ids: np.ndarray,
           data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> str | None:
    """What is inconsistent between the files, or None; bad arrays would give wrong hits silently."""
    if (meta.get("chunks"), meta.get("terms"), meta.get("postings")) != (len(ids), len(terms), len(data)):
        return "the array sizes differ from the ones recorded"
    if len(vocab) != len(terms) or not all(isinstance(t, str) for t in terms):
        return "the vocabulary has repeated or non-text terms"
    if len(indices) != len(data) or len(indptr) != len(terms) + 1:
        return "the score arrays disagree in length"
    if indptr[0] != 0 or indptr[-1] != len(data) or np.any(np.diff(indptr) < 0):
        return "the term offsets are out of order"
    if len(indices) and (indices.min() < 0 or indices.max() >= len(ids)):
        return "a posting points past the last chunk"
    if not np.all(data >= 0):
        return "a score is negative or not a number"
    if len(np.unique(ids)) != len(ids):
        return "a chunk id appears twice"
    return None
