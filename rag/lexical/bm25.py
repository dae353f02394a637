"""The format 2 BM25 index (`bm25.*` files): one score matrix per version, read for old indexes.

Index versions of format 2 and older hold one BM25 score matrix over all their chunks, with idf
and length normalization baked into the weights (a CSC matrix, chunks as rows, as bm25s lays it
out), saved as plain .npy arrays and JSON. `BM25Index.load` opens one, and its searches are scored
by bm25s (`BM25.get_scores`), with a metadata filter applied as its `weight_mask` inside the
scoring, so a filter that admits 1% of the chunks still yields k hits when k exist.

Nothing in rag writes this format: `build` and `save` are here so that tests can make the files an
old release wrote (the weights come from `rag.lexical.scoring`, as `SegmentedBM25`'s do).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorruptError, IndexMismatchError
from rag.idsets import positions
from rag.lexical import scoring
from rag.lexical.files import check_columns, read_array, read_json
from rag.lexical.hits import Hits, id_array, no_hits, top_k
from rag.lexical.postings import Postings
from rag.lexical.tokenizer import Tokenizer

FORMAT_VERSION = 1
META_FILE = "bm25.json"
VOCAB_FILE = "bm25.vocab.json"
IDS_FILE = "bm25.ids.npy"
DATA_FILE = "bm25.data.npy"
INDICES_FILE = "bm25.indices.npy"
INDPTR_FILE = "bm25.indptr.npy"
FILES = (META_FILE, VOCAB_FILE, IDS_FILE, DATA_FILE, INDICES_FILE, INDPTR_FILE)


class BM25Index:
    """Chunk ids and their BM25 term weights: `load` opens saved files, `search` reads them;
    `build` replaces the contents and `save` writes them (for tests)."""

    def __init__(self, tokenizer: Tokenizer | None = None, method: str = "lucene",
                 k1: float = 1.5, b: float = 0.75) -> None:
        scoring.check_parameters(method, k1, b)
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
        postings = Postings.build(ids, token_lists, self.tokenizer.settings)
        self._set(postings.ids, postings.vocab, self._score_matrix(postings))

    def _score_matrix(self, postings: Postings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BM25 weight of each (term, chunk) pair as a CSC matrix, chunks as rows (bm25s's layout)."""
        if not postings.vocab:
            return _empty_matrix()
        counts = np.diff(postings.indptr)
        idf = scoring.idf(self.method, len(postings.ids), counts.astype(np.float64))
        norm = scoring.length_norm(postings.lengths, self.k1, self.b, postings.lengths.mean())
        data = scoring.weights(postings.tf, norm[postings.rows], np.repeat(idf.astype(np.float32), counts),
                               self.method, self.k1)
        return data, postings.rows, postings.indptr

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
            return [no_hits() for _ in queries]
        mask = None
        if allowed is not None:
            mask = np.zeros(len(self._ids), dtype=np.float32)
            mask[self._positions(id_array(allowed))] = 1.0
        return [self._top(self.tokenizer.tokenize(query), k, mask) for query in queries]

    def _top(self, tokens: list[str], k: int, mask: np.ndarray | None) -> Hits:
        known = [token for token in tokens if token in self._vocab]
        if not known:
            return no_hits()
        scores = self._retriever.get_scores(known, weight_mask=mask)
        # Top k among the chunks that matched, cheaper than among every score (most are zero, all
        # but 1% under a narrow filter); ties go to the earlier chunk.
        rows = np.flatnonzero(scores > 0)
        rows, best = top_k(rows, scores[rows], k)
        return self._ids[rows], best

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of those of `ids` that are indexed (binary search, not a scan per query)."""
        at = positions(ids, self._sorted_ids)
        return self._id_order[at[at >= 0]]

    # -- files ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write FILES into `directory`, as a release of format 2 did (for tests: rag writes postings)."""
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
        meta = read_json(directory / META_FILE, dict)
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
        terms = read_json(directory / VOCAB_FILE, list)
        mode = "r" if mmap else None
        ids = read_array(directory / IDS_FILE, np.int64, None)
        data = read_array(directory / DATA_FILE, np.float32, mode)
        indices = read_array(directory / INDICES_FILE, np.int32, mode)
        indptr = read_array(directory / INDPTR_FILE, np.int64, mode)
        vocab = {term: i for i, term in enumerate(terms)}
        problem = check_columns(meta, terms, vocab, ids, data, indices, indptr, "a score")
        if problem:
            raise IndexCorruptError(f"{directory}: the BM25 index is damaged ({problem}); rebuild the index")
        index._set(ids, vocab, (data, indices, indptr))
        return index


def _empty_matrix() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int64)
