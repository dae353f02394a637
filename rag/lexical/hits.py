"""Search results as both BM25 readers give them: (chunk ids, scores) arrays, best first."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

Hits = tuple[np.ndarray, np.ndarray]


def no_hits() -> Hits:
    return np.zeros(0, np.int64), np.zeros(0, np.float32)


def id_array(ids: Collection[int] | np.ndarray) -> np.ndarray:
    """`ids` (a filter's or the tombstones') as a flat int64 array."""
    if isinstance(ids, np.ndarray):
        return ids.astype(np.int64, copy=False).ravel()
    return np.fromiter(ids, dtype=np.int64, count=len(ids))


def top_k(keys: np.ndarray, scores: np.ndarray, k: int) -> Hits:
    """The k highest scores, best first, with their keys; ties go to the smaller key, also at the
    k-th place, so equal input gives equal hits."""
    if len(scores) > k:
        # Everything tied with the k-th score stays in, so the cut below is made by key.
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        keys, scores = keys[keep], scores[keep]
    order = np.lexsort((keys, -scores))[:k]
    return keys[order].astype(np.int64, copy=False), scores[order]
