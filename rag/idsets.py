"""Sets of chunk ids as ascending int64 arrays, the form FAISS, BM25 and the segments share.

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
