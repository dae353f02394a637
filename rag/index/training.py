"""The new segment's vectors, and the buffer that holds them until an index type that needs
training (IVF, PQ) has enough to be trained on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rag.config import IndexSettings
from rag.index.vectors import ON_DISK_FILE, VectorIndex

log = logging.getLogger(__name__)


class NewVectors:
    """Vectors are added as they come once the index is trained; before, they wait in memory until
    index.train_sample of them train it (or the commit trains it on what there is). Once the
    segment's IVF lists pass index.ondisk_bytes they move into its folder, so a write larger than
    memory grows a file instead."""

    def __init__(self, index: VectorIndex, settings: IndexSettings, staging: Path | None) -> None:
        self.index = index
        self.settings = settings
        self.staging = staging  # the new segment's folder; None where lists must stay in memory
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_count = 0

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if self.index.is_trained:
            self.index.add(vectors, ids)
            self._move_large_lists_to_disk()
            return
        self._pending.append((vectors, ids))
        self._pending_count += len(ids)
        if self._pending_count >= self.settings.train_sample:
            self.flush()

    def add_codes(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Vectors another process encoded for this index's trained template (VectorIndex.encode)."""
        self.index.add_codes(codes, ids)
        self._move_large_lists_to_disk()

    def remove(self, ids: list[int], mask: Callable[[list[int]], None]) -> None:
        """Drop these ids: from the buffer if they wait there, else from the index, or `mask` them
        where the index cannot remove ids in place (HNSW)."""
        drop = set(ids)
        if self._pending:
            kept, unadded = [], set()
            for vecs, vec_ids in self._pending:
                keep = np.array([int(i) not in drop for i in vec_ids], dtype=bool)
                unadded.update(int(i) for i in vec_ids[~keep])
                kept.append((vecs[keep], vec_ids[keep]))
            self._pending = kept
            self._pending_count = sum(len(i) for _, i in kept)
            ids = [i for i in ids if int(i) not in unadded]
        if self.index.removes_in_place:
            self.index.remove(ids)
        else:
            mask(ids)

    def flush(self) -> None:
        """Train the index on the waiting vectors and add them."""
        if not self._pending:
            return
        vectors = np.concatenate([v for v, _ in self._pending])
        ids = np.concatenate([i for _, i in self._pending])
        log.info("stage: training %s on %d vectors", self.settings.factory, len(vectors))
        self.index.train(vectors[: self.settings.train_sample])
        self.index.add(vectors, ids)
        self._pending, self._pending_count = [], 0
        self._move_large_lists_to_disk()

    def _move_large_lists_to_disk(self) -> None:
        limit = self.settings.ondisk_bytes
        index = self.index
        if limit and self.staging is not None and index.list_bytes > limit and not index.on_disk:
            log.info("stage: the new segment's IVF lists pass index.ondisk_bytes; moving them to disk")
            index.move_lists_to_disk(self.staging / ON_DISK_FILE)
