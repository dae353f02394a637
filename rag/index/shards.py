"""One segment's FAISS index split into shards that one query searches side by side.

A single query scans a Flat index (or an IVF index's probed lists) on one core: FAISS spreads
a batch of queries over cores, not one query over its vectors. With `index.shards = N` a reader
splits each large Flat or IVF segment into N shards when it loads it (vectors by id modulo N;
IVF shards share the trained quantizer, their codes copied as stored), searches them on N
threads (FAISS releases the GIL) and merges their top k. Every shard of an IVF index probes the
same lists, so the hits are those of the whole index: the same vectors with the same scores,
ties in id order. Filters and deleted vectors are applied inside each shard's search, as they
are in a segment's. The shards replace the loaded index, so memory stays that of one copy.
FAISS's own IndexShards would search the raw FAISS indexes, bypassing what VectorIndex.search
adds around them (narrow filters scored exactly, the short-result fallback, OpenMP settings per
query), so each shard here is a VectorIndex and only the merge of their top k is done here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from rag.idsets import held_in, members
from rag.index.vectors import VectorIndex

# Below this many vectors a shard's share of a query costs less than the thread hand-off.
MIN_SHARD_VECTORS = 50_000


def split(index: VectorIndex, shards: int) -> "ShardedIndex | VectorIndex":
    """`index` as `shards` shards, or itself where that gains nothing or cannot be done
    (one shard, too few vectors, HNSW or another type, an index on the GPU, or one whose lists
    are on disk: shards would copy them into memory)."""
    if shards < 2 or index.on_gpu or index.on_disk or index.ntotal < shards * MIN_SHARD_VECTORS or \
            not (index.exhaustive or index.is_ivf):
        return index
    return ShardedIndex([index.shard(shards, n) for n in range(shards)])


class ShardedIndex:
    """The shards of one index, read like it: searched on one thread per shard."""

    def __init__(self, shards: list[VectorIndex]) -> None:
        self.shards = shards
        self.factory = shards[0].factory
        self._ids = [np.sort(shard.contains_ids()) for shard in shards]
        self._pool = ThreadPoolExecutor(len(shards), thread_name_prefix="rag-shard")

    @property
    def ntotal(self) -> int:
        return sum(shard.ntotal for shard in self.shards)

    @property
    def dimension(self) -> int:
        return self.shards[0].dimension

    @property
    def metric(self) -> str:
        return self.shards[0].metric

    @property
    def exhaustive(self) -> bool:
        return self.shards[0].exhaustive

    @property
    def is_ivf(self) -> bool:
        return self.shards[0].is_ivf

    @property
    def on_gpu(self) -> bool:
        return False

    def contains_ids(self) -> np.ndarray:
        return np.concatenate(self._ids)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self.dimension), np.float32)
        for shard, held in zip(self.shards, self._ids):
            mine = held_in(ids, held)
            if mine.any():
                out[mine] = shard.reconstruct(ids[mine])
        return out

    def search(self, queries: np.ndarray, k: int, nprobe: int, ef_search: int,
               allowed: np.ndarray | None = None, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k by inner product over every shard, best first, ties to the smaller id."""
        def one(shard: VectorIndex, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return shard.search(queries, k, nprobe, ef_search, _within(allowed, held), _within(excluded, held))

        found: list[Any] = list(self._pool.map(one, self.shards, self._ids))
        scores = np.concatenate([f[0] for f in found], axis=1)
        ids = np.concatenate([f[1] for f in found], axis=1)
        scores = np.where(ids < 0, -np.inf, scores)  # a shard's empty places go last
        order = np.lexsort((ids, -scores), axis=1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _within(ids: np.ndarray | None, held: np.ndarray) -> np.ndarray | None:
    return None if ids is None else members(np.asarray(ids, dtype=np.int64), held)
