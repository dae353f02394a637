"""GPU paths: FAISS indexes trained, grown and searched on the GPU through rag's own VectorIndex
and Engine, saved through their CPU copy and searched again on the CPU; fp16 embeddings on CUDA.

Tests marked `gpu` are skipped, never failed, where no GPU is seen: no /dev/nvidia* device (then
neither torch nor faiss is asked), faiss-cpu (no GPU functions), or a CPU build of torch. The
tests without the mark run everywhere: asking for a GPU that is not there, or for an index
type the GPU lacks, must leave a working CPU index.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rag import Settings
from rag.embed import Embedder
from rag.index.faisslib import gpu_count
from rag.index.vectors import ON_DISK_FILE, VectorIndex


def _nvidia_device() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _faiss_gpus() -> int:
    return gpu_count() if _nvidia_device() else 0


def _torch_cuda() -> bool:
    if not _nvidia_device():
        return False
    import torch

    return bool(torch.cuda.is_available())


FAISS_GPU = _faiss_gpus() > 0
faiss_gpu = pytest.mark.skipif(not FAISS_GPU, reason="FAISS sees no GPU (faiss-cpu, or no CUDA device)")
torch_cuda = pytest.mark.skipif(not _torch_cuda(), reason="torch sees no CUDA device")

D = 64
K = 10


def _unit(n: int, seed: int, d: int = D) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact(queries: np.ndarray, base: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ base.T
    order = np.argsort(-sims, axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of each row of `b` found in the same row of `a` (recall@k when b is exact)."""
    return float(np.mean([len(set(x.tolist()) & set(y.tolist())) / len(y) for x, y in zip(a, b)]))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """20,000 unit vectors with sparse, non-positional ids (as chunk ids are), and 200 queries."""
    base = _unit(20_000, 1)
    ids = np.arange(20_000, dtype=np.int64) * 7 + 1_000
    return base, ids, _unit(200, 2)


# -- everywhere ----------------------------------------------------------------------------


def test_gpu_requested_without_one_leaves_a_working_cpu_index(tmp_path, data, caplog):
    """IndexStore asks for the GPU whenever faiss reports one; asked where there is none, the
    index must stay on the CPU, say so, and build, search, save and reload as usual."""
    base, ids, queries = data
    with caplog.at_level(logging.WARNING, logger="rag.index.vectors"):
        index = VectorIndex.create("Flat", D, use_gpu=True)
    assert index.on_gpu == FAISS_GPU
    if not FAISS_GPU:
        assert "stays on the CPU" in caplog.text
    index.add(base[:5000], ids[:5000])
    scores, got = index.search(queries, K, nprobe=16, ef_search=128)
    want_scores, want = _exact(queries, base[:5000], ids[:5000], K)
    assert _overlap(got, want) >= 0.99
    np.testing.assert_allclose(scores, want_scores, atol=1e-4)
    index.save(tmp_path / "vectors.faiss")
    again = VectorIndex.load(tmp_path / "vectors.faiss", "Flat", use_gpu=False)
    assert again.ntotal == 5000 and _overlap(again.search(queries, K, 16, 128)[1], want) >= 0.99


def test_hnsw_asked_onto_the_gpu_stays_on_the_cpu(data):
    """faiss has no GPU HNSW: the copy to the GPU fails, and the CPU graph is searched instead."""
    base, ids, queries = data
    index = VectorIndex.create("HNSW32", D, use_gpu=True)
    assert not index.on_gpu
    index.add(base[:3000], ids[:3000])
    _, got = index.search(queries, K, nprobe=16, ef_search=256)
    assert _overlap(got, _exact(queries, base[:3000], ids[:3000], K)[1]) >= 0.9


def test_ivf_asked_onto_the_gpu_trains_adds_removes_and_filters(tmp_path, data):
    """Every write of an IVF index through the GPU-requesting path, on whatever device is here."""
    base, ids, queries = data
    index = VectorIndex.create("IVF32,Flat", D, use_gpu=True)
    assert not index.is_trained
    index.train(base[:4000])
    index.add(base[:4000], ids[:4000])
    index.add(base[4000:8000], ids[4000:8000])
    assert index.ntotal == 8000
    _, got = index.search(queries, K, nprobe=32, ef_search=128)  # every list: exact
    assert _overlap(got, _exact(queries, base[:8000], ids[:8000], K)[1]) >= 0.99
    assert index.remove(ids[:100].tolist()) == 100
    _, got = index.search(queries, K, nprobe=32, ef_search=128)
    assert not set(got.ravel().tolist()) & set(ids[:100].tolist())
    allowed = ids[100:400]
    _, got = index.search(queries, K, nprobe=1, ef_search=128, allowed=allowed)
    assert _overlap(got, _exact(queries, base[100:400], allowed, K)[1]) == 1.0
    index.save(tmp_path / "vectors.faiss")
    again = VectorIndex.load(tmp_path / "vectors.faiss", "IVF32,Flat", use_gpu=False)
    assert again.ntotal == 7900
    assert sorted(again.contains_ids().tolist()) == sorted(ids[100:8000].tolist())


# -- on a GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
@faiss_gpu
def test_flat_index_built_on_the_gpu_reloads_on_the_cpu_with_the_same_results(tmp_path, data):
    base, ids, queries = data
    index = VectorIndex.create("Flat", D, use_gpu=True)
    assert index.on_gpu and index._gpu is not None
    index.add(base[:12_000], ids[:12_000])
    index.add(base[12_000:], ids[12_000:])  # grown twice: adds after the first
    assert index.ntotal == 20_000
    gpu_scores, gpu_ids = index.search(queries, K, nprobe=16, ef_search=128)
    want_scores, want = _exact(queries, base, ids, K)
    assert _overlap(gpu_ids, want) >= 0.99
    np.testing.assert_allclose(gpu_scores, want_scores, atol=1e-4)
    # A filtered search runs on the CPU copy, brought up to date with the GPU's adds first.
    allowed = ids[15_000:15_500]
    _, got = index.search(queries, K, nprobe=16, ef_search=128, allowed=allowed)
    assert _overlap(got, _exact(queries, base[15_000:15_500], allowed, K)[1]) >= 0.99

    index.save(tmp_path / "vectors.faiss")
    cpu = VectorIndex.load(tmp_path / "vectors.faiss", "Flat", use_gpu=False)
    assert not cpu.on_gpu and cpu.ntotal == 20_000
    cpu_scores, cpu_ids = cpu.search(queries, K, nprobe=16, ef_search=128)
    assert _overlap(cpu_ids, gpu_ids) >= 0.99
    np.testing.assert_allclose(cpu_scores, gpu_scores, atol=1e-4)
    # And back onto the GPU, as a reader loads it.
    reader = VectorIndex.load(tmp_path / "vectors.faiss", "Flat", use_gpu=True)
    assert reader.on_gpu and _overlap(reader.search(queries, K, 16, 128)[1], gpu_ids) >= 0.99


@pytest.mark.gpu
@faiss_gpu
def test_ivf_index_trained_and_searched_on_the_gpu(tmp_path, data):
    base, ids, queries = data
    index = VectorIndex.create("IVF64,Flat", D, use_gpu=True)
    assert index.on_gpu and not index.is_trained
    index.train(base[:8000])  # on the GPU copy: the CPU one stays untrained until saved
    assert index.is_trained
    index.add(base[:10_000], ids[:10_000])
    index.add(base[10_000:], ids[10_000:])
    _, want = _exact(queries, base, ids, K)
    _, all_lists = index.search(queries, K, nprobe=64, ef_search=128)
    _, one_list = index.search(queries, K, nprobe=1, ef_search=128)
    # nprobe reaches the GpuIndexIVF: every list is exact, one list is not.
    assert _overlap(all_lists, want) >= 0.99
    assert _overlap(one_list, want) < 0.9
    _, gpu8 = index.search(queries, K, nprobe=8, ef_search=128)

    index.save(tmp_path / "vectors.faiss")
    cpu = VectorIndex.load(tmp_path / "vectors.faiss", "IVF64,Flat", use_gpu=False)
    assert cpu.is_trained and cpu.ntotal == 20_000
    _, cpu8 = cpu.search(queries, K, nprobe=8, ef_search=128)
    assert _overlap(cpu8, gpu8) >= 0.98  # same centroids, same lists, same probes
    # The saved copy kept its hash-table direct map: exact filtered search reconstructs vectors.
    allowed = ids[3000:3300]
    _, got = cpu.search(queries, K, nprobe=8, ef_search=128, allowed=allowed)
    assert _overlap(got, _exact(queries, base[3000:3300], allowed, K)[1]) >= 0.99
    assert cpu.remove(ids[:50].tolist()) == 50

    # Removal on the GPU index: done on the CPU copy, which the next search copies over again.
    assert index.remove(ids[:50].tolist()) == 50
    assert index.ntotal == 19_950
    _, got = index.search(queries, K, nprobe=64, ef_search=128)
    assert index.on_gpu and index._gpu is not None
    assert not set(got.ravel().tolist()) & set(ids[:50].tolist())


@pytest.mark.gpu
@faiss_gpu
@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_engine_indexes_on_the_gpu_and_a_cpu_engine_reads_the_same_index(make_engine, tmp_path, factory):
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(300):
        (docs / f"note-{i:03d}.txt").write_text(f"Ticket {i}: the conveyor in aisle {i} reports fault code F{i:03d}.")
    engine = make_engine(**{"index.factory": factory, "index.train_sample": 256, "index.nprobe": 4})
    assert engine.store.use_gpu()
    assert engine.index([docs]).documents == 300
    (docs / "note-007.txt").write_text("Ticket 7 was closed: the forklift battery was replaced.")
    assert engine.index([docs]).updated == 1  # a removal and an add on an index loaded onto the GPU
    assert engine.check().problems == []
    questions = ["forklift battery replaced", "fault code F123 in aisle 123", "conveyor fault in aisle 42"]
    on_gpu = [[(h.chunk_id, h.doc_id) for h in engine.search(q, k=5, mode="dense")] for q in questions]
    assert engine.reader().on_gpu  # the two segments, joined into one index on the GPU
    assert on_gpu[0][0][1] == "note-007.txt"

    cpu_engine = make_engine(**{"index.factory": factory, "index.nprobe": 4, "index.device": "cpu"})
    assert not cpu_engine.reader().on_gpu
    on_cpu = [[(h.chunk_id, h.doc_id) for h in cpu_engine.search(q, k=5, mode="dense")] for q in questions]
    # The same vectors and lists: the same passages (the order of near-equal scores may differ).
    for cpu_hits, gpu_hits in zip(on_cpu, on_gpu):
        assert cpu_hits[0] == gpu_hits[0] and len(set(cpu_hits) & set(gpu_hits)) >= 4


@pytest.mark.gpu
@faiss_gpu
def test_ivf_lists_on_disk_are_written_from_the_gpu_and_searched_on_the_cpu(make_engine, tmp_path):
    """A segment whose lists are on disk is larger than memory is meant to hold: it is not copied
    onto the GPU, and searches the same as a CPU engine reading the same index."""
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(300):
        (docs / f"note-{i:03d}.txt").write_text(f"Ticket {i}: the conveyor in aisle {i} reports fault code F{i:03d}.")
    settings = {"index.factory": "IVF4,Flat", "index.train_sample": 256, "index.nprobe": 4, "index.ondisk_bytes": 1}
    engine = make_engine(**settings)
    assert engine.store.use_gpu()
    assert engine.index([docs]).documents == 300  # trained and grown on the GPU, then moved to disk
    assert list(engine.store.segments_root.rglob(ON_DISK_FILE))
    assert engine.check().problems == []
    questions = ["fault code F123 in aisle 123", "conveyor fault in aisle 42"]
    found = [[(h.chunk_id, h.score) for h in engine.search(q, k=5, mode="dense")] for q in questions]
    assert not engine.reader().on_gpu
    cpu_engine = make_engine(**settings, **{"index.device": "cpu"})
    assert found == [[(h.chunk_id, h.score) for h in cpu_engine.search(q, k=5, mode="dense")] for q in questions]


@pytest.mark.gpu
@torch_cuda
def test_embeddings_on_cuda_are_fp16_in_large_batches_and_match_fp32():
    texts = [f"Ticket {i}: the conveyor in aisle {i} reports fault code F{i:03d}." for i in range(300)]
    gpu = Embedder(Settings.load(overrides={"embedding.device": "cuda"}, environ={}).embedding)
    gpu.warm_up()
    assert (gpu.backend, gpu.precision, gpu.batch_size) == ("torch", "fp16", 128)
    reference = Embedder(Settings.load(overrides={"embedding.device": "cpu", "embedding.precision": "fp32",
                                                  "embedding.backend": "torch"}, environ={}).embedding)
    a, b = gpu.embed_passages(texts), reference.embed_passages(texts)
    assert a.dtype == np.float32 and a.shape == b.shape
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.999
