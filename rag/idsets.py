"""Sets of chunk ids as ascending int64 arrays, the form FAISS, BM25 and the segments share, and
the exact top k over a few of them.

Membership is a binary search per id: a filter or the deleted ids cost their own length, not a
pass over every id an index holds.
"""

from __future__ import annotations

import numpy as np


def held_in(ids: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Which of `ids` the ascending array `held` holds (a mask)."""
    if not len(held):
        return np.zeros(len(ids), bool)
    return held[np.minimum(np.searchsorted(held, ids), len(held) - 1)] == ids


def members(ids: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Those of `ids` that `held` (ascending) holds."""
    return ids[held_in(ids, held)] if len(ids) else np.zeros(0, np.int64)


def positions(ids: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Where each of `ids` stands in the ascending `held`, or -1 where it is not there."""
    if not len(held):
        return np.full(len(ids), -1, np.int64)
    at = np.minimum(np.searchsorted(held, ids), len(held) - 1)
    return np.where(held[at] == ids, at, -1)


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of `vectors` (under `ids`) per query by inner product, scored exactly: what a
    narrow filter's few vectors get instead of an approximate index. Rows are padded with
    -inf and -1 past the vectors there are."""
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    if not len(ids):
        return scores, out
    sims = queries @ vectors.T
    top = min(k, len(ids))
    order = np.argpartition(-sims, top - 1, axis=1)[:, :top]
    for row in range(len(queries)):
        best = order[row][np.argsort(-sims[row, order[row]])]
        scores[row, :top], out[row, :top] = sims[row, best], ids[best]
    return scores, out
