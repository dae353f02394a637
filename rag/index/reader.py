"""A snapshot of one committed version, searched while writers commit newer ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rag.config import IndexSettings
from rag.errors import IndexCorruptError
from rag.index.access_map import sorted_unique
from rag.index.chunkstore import ChunkStore
from rag.index.folder import IndexFolder
from rag.index.legacy import LegacyVersion
from rag.index.manifest import Manifest
from rag.index.schema import CHUNKS_FILE
from rag.index.segments import Segment, joined_vectors, search_groups, version_problems
from rag.index.tokens import make_tokenizer
from rag.index.views import open_segments
from rag.lexical import BM25Index, Postings, SegmentedBM25


class IndexReader:
    """A snapshot of one committed version; stays valid while writers commit newer ones."""

    def __init__(self, directory: Path, settings: IndexSettings, use_gpu: bool, folder: IndexFolder) -> None:
        self.directory = directory
        self.settings = settings
        self.manifest = Manifest.read(directory)
        self.lexical: BM25Index | SegmentedBM25 | None
        if self.manifest.segmented:
            self._open_segments(folder, use_gpu)
        else:
            legacy = LegacyVersion(directory, self.manifest.index["factory"], use_gpu, make_tokenizer(settings))
            self.chunks = legacy.chunks
            self.segments = self._searched = [legacy.segment]
            self.lexical = legacy.lexical
            self.masked = self.chunks.dead_ids()
        # Each searched segment's dead vectors: those its own search must skip (none in a joined one).
        self._dead = [segment.holds(self.masked) for segment in self._searched]
        problems = version_problems(self.manifest, self.segments)
        if problems:
            self.chunks.close()
            raise IndexCorruptError(f"{directory}: {'; '.join(problems)}; run `rag check`, or rebuild the index")

    def _open_segments(self, folder: IndexFolder, use_gpu: bool) -> None:
        tokenizer = make_tokenizer(self.settings)
        records = self.manifest.segments
        self.segments = [folder.open_segment(r, tokenizer.settings) for r in records]
        folder.forget_segments_but({r.name for r in records})
        # Small segments are searched as one: their rows, vectors and postings joined.
        groups = [[self.segments[i] for i in group] for group in search_groups(self.segments)]
        self.chunks: ChunkStore = open_segments([(r.name, folder.segments_root / r.name / CHUNKS_FILE) for r in records],
                                                joined=[[segment.name for segment in group] for group in groups])
        try:
            dead = self.chunks.dead_ids()
            postings = []
            self._searched: list[Segment] = []
            for parts in groups:
                held = [p.postings for p in parts if p.postings is not None]
                if held:
                    postings.append(held[0] if len(held) == 1 else Postings.concat(held))
                joined = joined_vectors(parts, dead, use_gpu) if len(parts) > 1 else None
                self._searched.extend([joined] if joined is not None else parts)
        except BaseException:
            self.chunks.close()
            raise
        self.masked = dead
        self.lexical = SegmentedBM25(postings, [dead] * len(postings), tokenizer, **self.manifest.index.get("bm25", {}))

    @property
    def version(self) -> str:
        return self.directory.name

    @property
    def on_gpu(self) -> bool:
        """Whether its vectors are searched on the GPU (every segment's, joined ones included)."""
        held = [s.vectors for s in self._searched if s.vectors is not None]
        return bool(held) and all(v.on_gpu for v in held)

    @property
    def vector_count(self) -> int:
        return sum(s.vectors.ntotal for s in self.segments if s.vectors is not None)

    def search(self, query_vectors: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """(chunk id, score) best first; `allowed` restricts the search to a filter's chunk ids."""
        empty: list[list[tuple[int, float]]] = [[] for _ in range(len(query_vectors))]
        if allowed is not None:
            if not len(allowed):
                return empty
            allowed = sorted_unique(np.asarray(allowed, dtype=np.int64))
        found = []
        for segment, dead in zip(self._searched, self._dead):
            if segment.vectors is None or segment.vectors.ntotal == len(dead):
                continue
            mine = segment.holds(allowed) if allowed is not None else None
            if mine is not None and not len(mine):
                continue
            found.append(segment.vectors.search(query_vectors, k, self.settings.nprobe, self.settings.hnsw_ef_search,
                                                mine, dead))
        if not found:
            return empty
        if len(found) == 1:
            scores, ids = found[0]
        else:
            scores, ids = np.concatenate([f[0] for f in found], axis=1), np.concatenate([f[1] for f in found], axis=1)
            order = np.lexsort((ids, -scores), axis=1)[:, :k]  # best score first, then the smaller id
            scores, ids = np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
        return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]
                for row_ids, row_scores in zip(ids, scores)]

    def close(self) -> None:
        self.chunks.close()
