"""BM25 search over segments' postings, with N, avgdl and df over the live chunks of all of them.

A segment's postings hold term frequencies only (`rag.lexical.postings`); `SegmentedBM25` computes
N, avgdl and each query term's df over the live chunks of every segment when it searches, so that
scores from different segments can be compared and merged, and equal those of one index built over
the same live chunks.

The weights come from `rag.lexical.scoring`, the float32 arithmetic of the bm25s score matrix, and
are summed per query token in float32 as bm25s's `get_scores` sums them (a repeated query token
counts once per occurrence), so the scores are bit for bit those of a format 2 `BM25Index` built
over the live chunks.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from rag.errors import IndexMismatchError
from rag.idsets import positions
from rag.lexical import scoring
from rag.lexical.hits import Hits, id_array, no_hits, top_k
from rag.lexical.postings import Postings
from rag.lexical.tokenizer import Tokenizer


class SegmentedBM25:
    """BM25 search over several segments' postings, with N, avgdl and df over all live chunks.

    Built per index version (the segments and tombstones are fixed): setting up costs O(rows) per
    segment; a query costs the postings of its terms plus O(rows) per segment for the scores.
    """

    def __init__(self, segments: Sequence[Postings], dead: Sequence[np.ndarray | None], tokenizer: Tokenizer,
                 method: str = "lucene", k1: float = 1.5, b: float = 0.75) -> None:
        scoring.check_parameters(method, k1, b)
        if len(dead) != len(segments):
            raise ValueError(f"{len(segments)} segments but {len(dead)} tombstone lists")
        for segment in segments:
            if segment.tokenizer_settings != tokenizer.settings:
                raise IndexMismatchError(
                    f"a BM25 segment was tokenized with {segment.tokenizer_settings}, the settings give "
                    f"{tokenizer.settings}; use those settings or re-index the documents"
                )
        self.tokenizer = tokenizer
        self.method = method
        self.k1 = float(k1)
        self.b = float(b)
        self._segments = list(segments)
        self._id_order = [np.argsort(s.ids, kind="stable") for s in self._segments]
        self._sorted_ids = [np.asarray(s.ids)[order] for s, order in zip(self._segments, self._id_order)]
        # None where every row is live: most segments have no tombstones, and then need no masking.
        self._live: list[np.ndarray | None] = []
        for i, tombstones in enumerate(dead):
            live = None
            if tombstones is not None and len(tombstones):
                hit = self._positions(i, id_array(tombstones))
                if len(hit):
                    live = np.ones(len(self._segments[i]), dtype=bool)
                    live[hit] = False
            self._live.append(live)
        live_ids = [np.asarray(s.ids) if live is None else np.asarray(s.ids)[live]
                    for s, live in zip(self._segments, self._live)]
        self._ids = np.sort(np.concatenate(live_ids)) if live_ids else np.zeros(0, np.int64)
        if len(self._ids) > 1 and np.any(self._ids[1:] == self._ids[:-1]):
            repeated = self._ids[1:][self._ids[1:] == self._ids[:-1]][0]
            raise ValueError(f"chunk id {repeated} is live in more than one segment; tombstone the old copy")
        total = sum(int(np.sum(s.lengths if live is None else s.lengths[live], dtype=np.int64))
                    for s, live in zip(self._segments, self._live))
        self._n = len(self._ids)
        self._avgdl = total / self._n if self._n else 0.0
        # The segments' rows as one row space (segment i's rows start at _offsets[i]): a query
        # scores one array, not one per segment (ten small segments cost 4x one big one).
        self._offsets = np.cumsum([0, *(len(s) for s in self._segments)])
        self._row_ids = np.concatenate([np.asarray(s.ids) for s in self._segments]) if self._segments \
            else np.zeros(0, np.int64)
        self._row_live = None if all(live is None for live in self._live) else np.concatenate(
            [np.ones(len(s), bool) if live is None else live for s, live in zip(self._segments, self._live)])
        lengths = np.concatenate([np.asarray(s.lengths) for s in self._segments]) if self._segments \
            else np.zeros(0, np.int32)
        self._length_norm = scoring.length_norm(lengths, self.k1, self.b, self._avgdl) \
            if self._avgdl > 0 else np.zeros(len(lengths), np.float32)

    @property
    def settings(self) -> dict[str, Any]:
        return {"method": self.method, "k1": self.k1, "b": self.b}

    @property
    def ids(self) -> np.ndarray:
        """Every live chunk id, ascending."""
        return self._ids

    @property
    def avgdl(self) -> float:
        """Mean length in tokens of the live chunks."""
        return self._avgdl

    def __len__(self) -> int:
        return self._n

    # -- searching -----------------------------------------------------------------------

    def search(self, query: str, k: int, allowed: Collection[int] | np.ndarray | None = None) -> Hits:
        """The k best chunks with a score above zero, best first, as (chunk ids, scores).

        `allowed` holds the chunk ids a metadata filter admits; the others are never returned.
        Ties go to the smaller chunk id.
        """
        return self.search_many([query], k, allowed)[0]

    def search_many(self, queries: Sequence[str], k: int,
                    allowed: Collection[int] | np.ndarray | None = None) -> list[Hits]:
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        if self._n == 0:
            return [no_hits() for _ in queries]
        mask = self._row_live
        if allowed is not None:
            wanted = id_array(allowed)
            mask = np.zeros(len(self._row_ids), dtype=bool)
            for i in range(len(self._segments)):
                mask[self._offsets[i] + self._positions(i, wanted)] = True
            if self._row_live is not None:
                mask &= self._row_live
        return [self._top(self.tokenizer.tokenize(query), k, mask) for query in queries]

    def _top(self, tokens: list[str], k: int, mask: np.ndarray | None) -> Hits:
        # Each distinct query term's live postings over all segments (rows in the joint row
        # space), and so its df over the whole version.
        postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term in dict.fromkeys(tokens):
            found = [(rows, tf, self._offsets[i]) for i, segment in enumerate(self._segments)
                     for rows, tf in (segment.term_postings(term),) if len(rows)]
            if not found:
                continue
            rows = found[0][0] + found[0][2] if len(found) == 1 else \
                np.concatenate([r.astype(np.int64) + offset for r, _, offset in found])
            tf = found[0][1] if len(found) == 1 else np.concatenate([t for _, t, _ in found])
            if self._row_live is not None:
                keep = self._row_live[rows]
                rows, tf = rows[keep], tf[keep]
            if len(rows):
                postings[term] = (rows, tf)
        # A term with no live posting is not in the vocabulary of a BM25Index over the live chunks.
        known = [token for token in tokens if token in postings]
        if not known:
            return no_hits()
        df = np.array([len(rows) for rows, _ in postings.values()], dtype=np.float64)
        idf = scoring.idf(self.method, self._n, df).astype(np.float32)
        weights = {term: (rows, scoring.weights(tf, self._length_norm[rows], term_idf, self.method, self.k1))
                   for (term, (rows, tf)), term_idf in zip(postings.items(), idf)}
        # Summed in float32 token by token, repeats included, as bm25s's get_scores sums them.
        scores = np.zeros(len(self._row_ids), dtype=np.float32)
        for token in known:
            rows, weight = weights[token]
            scores[rows] += weight  # a term's rows are distinct, so no np.add.at is needed
        # The rows the query's postings touch, when they are few; else one pass over the scores.
        touched = [rows for rows, _ in weights.values()]
        if sum(len(rows) for rows in touched) * 8 < len(scores):
            candidates = touched[0] if len(touched) == 1 else np.unique(np.concatenate(touched))
            candidates = candidates[scores[candidates] > 0]
        else:
            candidates = np.flatnonzero(scores > 0)
        if mask is not None:
            candidates = candidates[mask[candidates]]
        if not len(candidates):
            return no_hits()
        return top_k(self._row_ids[candidates], scores[candidates], k)

    def _positions(self, segment: int, ids: np.ndarray) -> np.ndarray:
        """Rows in `segment` of those of `ids` it holds (binary search, not a scan per id)."""
        at = positions(ids, self._sorted_ids[segment])
        return self._id_order[segment][at[at >= 0]]
