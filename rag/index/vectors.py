"""A FAISS index with int64 ids (the chunk ids), built from a factory string.

Index types that cannot take ids (Flat, HNSW) are wrapped in IndexIDMap2; IVF types get a
hash-table direct map so vectors can be reconstructed (for rebuilds) and removed. When
faiss reports a GPU the index is trained, grown and searched there and saved through a CPU copy,
which is brought up to date only when something reads it (a save, a removal, a filtered search).
Flat and IVF types go to the GPU; HNSW stays on the CPU (faiss has no GPU HNSW). An IVF index
may keep its inverted lists in a file beside it (`ON_DISK_FILE`, FAISS's OnDiskInvertedLists) that
is mapped rather than read into memory, so a segment can outgrow memory. CAGRA is not
offered here: faiss's GpuIndexCagra builds its graph once, and a later add() is silently ignored
(GpuIndexCagra::add_ex calls train_ex, which returns when already trained), so it cannot hold an
index that grows a document at a time; benchmarks/gpu_bench.py measures it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ConfigError, IndexCorruptError, RagError
from rag.idsets import exact_top_k
from rag.index import ivf as ivf_lists
from rag.index.faisslib import SMALL_SEARCH, load_faiss, prints_to_stderr, team_threads

log = logging.getLogger(__name__)

VECTORS_FILE = "vectors.faiss"
# An IVF index's inverted lists kept on disk, beside its VECTORS_FILE (FAISS OnDiskInvertedLists).
ON_DISK_FILE = "vectors.ivfdata"


# Filters admitting at most this many vectors are scored exactly (exact_top_k over their
# reconstructed vectors) rather than through the approximate index.
EXACT_SEARCH_LIMIT = 20_000

# faiss's GPU k-selection limit (GPU_MAX_SELECTION_K; cuVS builds allow more): larger k, and
# nprobe, are searched on the CPU copy instead.
GPU_MAX_K = 2048


class VectorIndex:
    def __init__(self, cpu_index: Any, factory: str, use_gpu: bool) -> None:
        self.factory = factory
        self._cpu = cpu_index
        self._gpu: Any = None
        self._gpu_resources: Any = None
        # Training and adds on the GPU leave the CPU copy behind until something reads it; a
        # removal (on the CPU) drops the GPU copy, copied over again at the next search.
        self._cpu_stale = False
        self._want_gpu = use_gpu
        # GPU indexes are not thread-safe even for searches (their StandardGpuResources' scratch
        # memory has one user at a time), and rag serve searches from several threads.
        self._gpu_lock = threading.Lock()
        if use_gpu:
            self._to_gpu()

    # -- construction --------------------------------------------------------------------

    @classmethod
    def create(cls, factory: str, dimension: int, use_gpu: bool) -> "VectorIndex":
        faiss = load_faiss()
        try:
            index = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(
                f"index.factory = {factory!r} is not a FAISS index_factory string FAISS accepts "
                f"(e.g. 'Flat', 'HNSW32', 'IVF1024,Flat', 'IVF256,PQ32'): {str(exc).splitlines()[-1]}"
            ) from None
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        elif not isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            index = faiss.IndexIDMap2(index)
        return cls(index, factory, use_gpu)

    @classmethod
    def load(cls, path: Path, factory: str, use_gpu: bool) -> "VectorIndex":
        faiss = load_faiss()
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing; run `rag check` or rebuild the index")
        lists = path.with_name(ON_DISK_FILE)
        try:
            if not lists.is_file():
                return cls(faiss.read_index(str(path)), factory, use_gpu)
            # The lists file is mapped read-only from where it is now (FAISS would look where it
            # was written, the segment's staging folder); the map is never written through.
            index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
            on_disk = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
            if lists.stat().st_size < on_disk.totsize:
                # Mapped anyway, reading its missing end would kill the process (SIGBUS).
                raise IndexCorruptError(f"{lists} holds {lists.stat().st_size} bytes, {path.name} says "
                                        f"{on_disk.totsize}: it was cut short; run `rag check`, or rebuild the index")
            on_disk.filename = str(lists)
            on_disk.do_mmap()
            on_disk.prefetch_nthread = 0
        except RuntimeError as exc:
            raise IndexCorruptError(f"{path} cannot be read ({str(exc).splitlines()[-1]}); rebuild the index") from None
        if use_gpu:
            log.info("%s keeps its inverted lists on disk: searched on the CPU", path.parent.name)
        return cls(index, factory, use_gpu=False)

    def _to_gpu(self) -> None:
        """Copy the CPU index to GPU 0; an index type the GPU lacks (HNSW), or faiss-cpu (no
        StandardGpuResources), leaves it on the CPU for good, searched there as before."""
        faiss = load_faiss()
        try:
            self._gpu_resources = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu)
            self._cpu_stale = False
            log.info("FAISS index %s on GPU 0", self.factory)
        except (AttributeError, RuntimeError) as exc:
            log.warning("FAISS index %s stays on the CPU: %s", self.factory, (str(exc).splitlines() or [""])[-1])
            self._gpu = self._gpu_resources = None
            self._want_gpu = False

    @property
    def _active(self) -> Any:
        return self._gpu if self._gpu is not None else self._cpu

    @property
    def on_gpu(self) -> bool:
        """Whether unfiltered searches run on the GPU."""
        return self._want_gpu

    def _sync_to_cpu(self) -> None:
        """Bring the CPU copy up to date with the GPU's training and adds: it is the one saved,
        filtered and changed by removals."""
        if self._gpu is None or not self._cpu_stale:
            return
        faiss = load_faiss()
        cpu = faiss.index_gpu_to_cpu(self._gpu)
        ivf = faiss.try_extract_index_ivf(cpu)
        if ivf is not None:
            # GPU IVF indexes keep no direct map and copy back without one; reconstruction
            # (exact filtered search, rebuilds) needs the hash table create() set up.
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        self._cpu = cpu
        self._cpu_stale = False

    def _cpu_changed(self) -> None:
        """The CPU copy was changed (a removal): the GPU copy is out of date and is dropped;
        adds go to the CPU from now on, and the next search copies the index over again."""
        self._gpu = self._gpu_resources = None

    # -- writes --------------------------------------------------------------------------

    @property
    def is_trained(self) -> bool:
        return bool(self._active.is_trained)

    @property
    def ntotal(self) -> int:
        return int(self._active.ntotal)

    @property
    def dimension(self) -> int:
        return int(self._active.d)

    @property
    def exhaustive(self) -> bool:
        """Whether this is a flat index: its vectors reconstruct exactly and need no training."""
        faiss = load_faiss()
        inner = faiss.downcast_index(self._cpu.index) if hasattr(self._cpu, "index") else self._cpu
        return isinstance(inner, faiss.IndexFlat)

    @property
    def metric(self) -> str:
        """The manifest's name for the FAISS metric ("inner_product", "l2", or the raw number)."""
        faiss = load_faiss()
        kind = int(self._active.metric_type)
        return {faiss.METRIC_INNER_PRODUCT: "inner_product", faiss.METRIC_L2: "l2"}.get(kind, str(kind))

    def min_training_vectors(self) -> int:
        faiss = load_faiss()
        ivf = faiss.try_extract_index_ivf(self._cpu)
        need = int(ivf.nlist) if ivf is not None else 1
        if "PQ" in self.factory.upper():
            need = max(need, 256)
        return need

    def train(self, vectors: np.ndarray) -> None:
        need = self.min_training_vectors()
        if len(vectors) < need:
            raise RagError(
                f"index.factory {self.factory!r} needs at least {need} vectors to train, but only "
                f"{len(vectors)} chunks are indexed. Index more documents in the first run, or use a "
                "smaller index type ('Flat', 'HNSW32', or fewer IVF lists)."
            )
        self._active.train(np.ascontiguousarray(vectors, dtype=np.float32))
        self._cpu_stale = self._gpu is not None

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if len(vectors) == 0:
            return
        with prints_to_stderr() if self.on_disk else contextlib.nullcontext():
            self._active.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
        self._cpu_stale = self._gpu is not None

    @classmethod
    def from_bytes(cls, data: np.ndarray, factory: str) -> "VectorIndex":
        """An index from a file's bytes, in FAISS's own format (a trained template sent to workers)."""
        return cls(load_faiss().deserialize_index(np.ascontiguousarray(data, dtype=np.uint8)), factory, use_gpu=False)

    @property
    def code_size(self) -> int:
        """Bytes of one vector encoded by `encode` (an IVF index's list number and code)."""
        return int(self._cpu.sa_code_size())

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """The vectors as this trained IVF index stores them, list number and code (FAISS
        sa_encode), so that another process's `add_codes` stores them without encoding."""
        return self._cpu.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))

    def add_codes(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Store vectors `encode` made with this index's training (rag.index.ivf.add_codes)."""
        if not len(codes):
            return
        self._sync_to_cpu()
        ivf_lists.add_codes(self._cpu, codes, ids)
        if self._gpu is not None:
            self._cpu_changed()

    @property
    def on_disk(self) -> bool:
        """Whether this IVF index's inverted lists live in a mapped file (ON_DISK_FILE)."""
        return ivf_lists.on_disk(self._cpu)

    @property
    def list_bytes_per_vector(self) -> int:
        """What a vector takes in an IVF index's inverted lists (its code and id); 0 for other types."""
        return ivf_lists.list_bytes_per_vector(self._cpu)

    @property
    def list_bytes(self) -> int:
        """What an IVF index's inverted lists hold; 0 for other types."""
        return self.ntotal * self.list_bytes_per_vector

    def move_lists_to_disk(self, path: Path) -> None:
        """Move this IVF index's inverted lists into the file `path` (ON_DISK_FILE beside where
        the index will be saved), mapped from then on: later adds grow the file, not memory."""
        self._sync_to_cpu()
        ivf_lists.move_lists_to_disk(self._cpu, path)
        self._cpu_changed()

    @property
    def is_ivf(self) -> bool:
        return load_faiss().try_extract_index_ivf(self._cpu) is not None

    def absorb(self, others: list["VectorIndex"], keep: np.ndarray, path: Path | None = None) -> None:
        """Move the vectors of `keep` (ids, ascending) from `others` (IVF indexes trained like
        this empty one) into it as stored, into memory or lists in the file `path` (a merge
        copies codes instead of decoding and encoding every vector again)."""
        self._sync_to_cpu()
        for other in others:
            other._sync_to_cpu()
        ivf_lists.absorb(self._cpu, [other._cpu for other in others], keep, path)
        self._cpu_changed()

    def shard(self, count: int, number: int) -> "VectorIndex":
        """A new CPU index of the same type holding the vectors whose id % count == number (a
        Flat index's copied, an IVF index's codes copied as stored, under the same quantizer)."""
        self._sync_to_cpu()
        if self.exhaustive:
            ids = self.contains_ids()
            ids = np.sort(ids[ids % count == number])
            part = VectorIndex.create(self.factory, self.dimension, use_gpu=False)
            part.add(self.reconstruct(ids), ids)
            return part
        return VectorIndex(ivf_lists.shard(self._cpu, count, number), self.factory, use_gpu=False)

    @property
    def removes_in_place(self) -> bool:
        """HNSW graphs cannot drop nodes: their removed ids are masked until `rag compact`."""
        return "HNSW" not in self.factory.upper()

    def remove(self, ids: list[int]) -> int:
        """Remove ids in place where FAISS can; otherwise rebuild without them (HNSW)."""
        if not ids:
            return 0
        faiss = load_faiss()
        self._sync_to_cpu()
        id_array = np.asarray(ids, dtype=np.int64)
        if faiss.try_extract_index_ivf(self._cpu) is not None:
            # IVF's hash-table direct map removes only through an IDSelectorArray.
            selector = faiss.IDSelectorArray(len(id_array), faiss.swig_ptr(id_array))
        else:
            selector = faiss.IDSelectorBatch(id_array)
        try:
            removed = int(self._cpu.remove_ids(selector))
        except RuntimeError:
            log.info("%s cannot remove ids in place; rebuilding without them", self.factory)
            removed = self._rebuild_without(set(ids))
        if removed:
            self._cpu_changed()
        return removed

    def _all_ids(self) -> np.ndarray:
        faiss = load_faiss()
        if isinstance(self._cpu, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            return faiss.vector_to_array(self._cpu.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self._cpu)
        invlists = ivf.invlists
        out = []
        for list_no in range(ivf.nlist):
            size = invlists.list_size(list_no)
            if size:
                ptr = invlists.get_ids(list_no)
                out.append(faiss.rev_swig_ptr(ptr, size).copy())
                invlists.release_ids(list_no, ptr)
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)

    def _rebuild_without(self, drop: set[int]) -> int:
        keep = np.array([i for i in self._all_ids() if int(i) not in drop], dtype=np.int64)
        vectors = self._cpu.reconstruct_batch(keep) if len(keep) else np.zeros((0, self.dimension), np.float32)
        fresh = VectorIndex.create(self.factory, self.dimension, use_gpu=False)
        if not fresh.is_trained and len(keep):
            fresh.train(vectors)
        fresh.add(vectors, keep)
        removed = self.ntotal - fresh.ntotal
        self._cpu = fresh._cpu
        return removed

    def save(self, path: Path) -> None:
        self._sync_to_cpu()
        tmp = path.with_suffix(".tmp")
        load_faiss().write_index(self._cpu, str(tmp))
        os.replace(tmp, path)

    # -- reads ---------------------------------------------------------------------------

    def contains_ids(self) -> np.ndarray:
        self._sync_to_cpu()
        return self._all_ids()

    def empty_copy(self) -> "VectorIndex":
        """This index's training (IVF centroids, PQ codebooks) without its vectors."""
        faiss = load_faiss()
        self._sync_to_cpu()
        if not self.on_disk:
            copy = faiss.clone_index(self._cpu)
        else:
            # FAISS cannot clone on-disk lists: cloned around an empty stand-in for them.
            ivf = faiss.extract_index_ivf(self._cpu)
            lists, owned = ivf.invlists, ivf.own_invlists
            ivf.own_invlists = False
            stand_in = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
            ivf.replace_invlists(stand_in, True)
            stand_in.this.disown()  # the index frees it when the lists are put back
            try:
                copy = faiss.clone_index(self._cpu)
            finally:
                ivf.replace_invlists(lists, owned)
        copy.reset()
        return VectorIndex(copy, self.factory, use_gpu=False)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of `ids` (all held by this index), for merging segments."""
        self._sync_to_cpu()
        if not len(ids):
            return np.zeros((0, self.dimension), np.float32)
        return self._cpu.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    def _params(self, k: int, nprobe: int, ef_search: int, selector: Any) -> Any:
        faiss = load_faiss()
        ivf = faiss.try_extract_index_ivf(self._cpu)
        if ivf is not None:
            return faiss.SearchParametersIVF(sel=selector, nprobe=min(nprobe, ivf.nlist))
        inner = faiss.downcast_index(self._cpu.index) if hasattr(self._cpu, "index") else self._cpu
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(ef_search, k))
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def search(self, queries: np.ndarray, k: int, nprobe: int, ef_search: int,
               allowed: np.ndarray | None = None, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k by inner product. `allowed` (a metadata filter's chunk ids) and `excluded` (masked
        ids) are applied inside the search, so a narrow filter still finds k results when k exist."""
        faiss = load_faiss()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1 if len(queries) < SMALL_SEARCH else team_threads())
        try:
            return self._search(queries, k, nprobe, ef_search, allowed, excluded)
        finally:
            faiss.omp_set_num_threads(threads)

    def _search(self, queries: np.ndarray, k: int, nprobe: int, ef_search: int,
                allowed: np.ndarray | None, excluded: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        faiss = load_faiss()
        excluded = excluded if excluded is not None and len(excluded) else None
        if allowed is not None:
            if excluded is not None:
                allowed = np.setdiff1d(allowed, excluded, assume_unique=False)
            if len(allowed) <= EXACT_SEARCH_LIMIT:
                return self._exact(queries, k, allowed)
            selector: Any = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        elif excluded is not None:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.ascontiguousarray(excluded, dtype=np.int64)))
        else:
            selector = None
        live = self.ntotal - (len(excluded) if excluded is not None else 0)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if self._want_gpu and selector is None and k <= GPU_MAX_K:
            found = self._gpu_search(queries, k, nprobe)
            if found is not None:
                return found
        # GPU indexes take no ID selectors (not in every faiss-gpu): filtered searches run on the CPU copy.
        self._sync_to_cpu()
        params = self._params(k, nprobe, ef_search, selector)
        scores, ids = self._cpu.search(queries, k, params=params) if params is not None else self._cpu.search(queries, k)
        wanted = min(k, live if allowed is None else len(allowed))
        short = [row for row in range(len(ids)) if int((ids[row] >= 0).sum()) < wanted]
        if short and allowed is not None:
            # An approximate index (IVF probes, HNSW's graph) can miss matches a narrow filter
            # leaves; score those queries exactly over the allowed vectors instead.
            exact_scores, exact_ids = self._exact(queries[short], k, allowed)
            scores[short], ids[short] = exact_scores, exact_ids
        return scores, ids

    def _gpu_search(self, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Top k on the GPU copy, or None (searched on the CPU instead) where the GPU refuses."""
        faiss = load_faiss()
        with self._gpu_lock:
            if self._gpu is None:
                self._to_gpu()  # dropped after a removal: copy the CPU index over again
                if self._gpu is None:
                    return None
            try:
                ivf = faiss.try_extract_index_ivf(self._cpu)
                if ivf is not None:
                    # GpuIndexIVF keeps an nprobe of its own (copied from the CPU index's, 1); capped
                    # at nlist like the CPU's SearchParametersIVF, and at the GPU's selection limit.
                    faiss.GpuParameterSpace().set_index_parameter(self._gpu, "nprobe",
                                                                  max(1, min(nprobe, int(ivf.nlist), GPU_MAX_K)))
                return self._gpu.search(queries, k)
            except (AttributeError, RuntimeError) as exc:
                log.warning("GPU search failed, searching on the CPU: %s", (str(exc).splitlines() or [""])[-1])
                return None

    def _exact(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._sync_to_cpu()
        allowed = np.ascontiguousarray(allowed, dtype=np.int64)
        vectors = self._cpu.reconstruct_batch(allowed) if len(allowed) else np.zeros((0, self.dimension), np.float32)
        return exact_top_k(queries, vectors, allowed, k)
