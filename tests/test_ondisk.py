"""IVF inverted lists on disk (index.ondisk_bytes): a segment whose lists outgrow the limit keeps
them in vectors.ivfdata, mapped read-only by readers, and searches exactly as in memory."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.errors import IndexCorruptError
from rag.index.vectors import ON_DISK_FILE, VECTORS_FILE, VectorIndex
from tests.test_segments import _write

FACTORY = "IVF16,PQ8"


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 32)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _template() -> VectorIndex:
    index = VectorIndex.create(FACTORY, 32, use_gpu=False)
    index.train(_vectors(2000, seed=1))
    return index.empty_copy()


def test_lists_moved_to_disk_take_later_adds_and_removals_like_memory(tmp_path):
    x, ids = _vectors(6000), np.arange(1, 6001, dtype=np.int64)
    template = _template()
    memory, disk = template.empty_copy(), template.empty_copy()
    (tmp_path / "staging").mkdir()
    memory.add(x[:1000], ids[:1000])
    disk.add(x[:1000], ids[:1000])
    disk.move_lists_to_disk(tmp_path / "staging" / ON_DISK_FILE)
    assert disk.on_disk and not memory.on_disk
    # Adds after the move grow lists that were laid out by it: none may overwrite another.
    for start in range(1000, 6000, 250):
        memory.add(x[start:start + 250], ids[start:start + 250])
        disk.add(x[start:start + 250], ids[start:start + 250])
    memory.remove([3, 1500, 5999])
    disk.remove([3, 1500, 5999])
    queries = x[::97]
    expected = memory.search(queries, 50, 16, 0)
    found = disk.search(queries, 50, 16, 0)
    assert np.array_equal(found[1], expected[1]) and np.array_equal(found[0], expected[0])
    assert np.array_equal(disk.reconstruct(ids[10:40]), memory.reconstruct(ids[10:40]))

    disk.save(tmp_path / "staging" / VECTORS_FILE)
    shutil.move(tmp_path / "staging", tmp_path / "segment")  # as a segment's folder is renamed into place
    loaded = VectorIndex.load(tmp_path / "segment" / VECTORS_FILE, FACTORY, use_gpu=False)
    assert loaded.on_disk and loaded.ntotal == memory.ntotal
    found = loaded.search(queries, 50, 16, 0)
    assert np.array_equal(found[1], expected[1])
    allowed = ids[100:400]
    assert np.array_equal(loaded.search(queries, 10, 16, 0, allowed=allowed)[1],
                          memory.search(queries, 10, 16, 0, allowed=allowed)[1])
    # A committed segment's lists are mapped read-only: nothing done to the loaded index reaches the file.
    before = (tmp_path / "segment" / ON_DISK_FILE).read_bytes()
    loaded.remove([7])
    assert (tmp_path / "segment" / ON_DISK_FILE).read_bytes() == before


def test_absorbing_live_vectors_to_disk_or_memory_equals_rebuilding(tmp_path):
    x, ids = _vectors(5000), np.arange(1, 5001, dtype=np.int64)
    template = _template()
    parts = []
    for n, (lo, hi) in enumerate([(0, 2000), (2000, 3500), (3500, 5000)]):
        part = template.empty_copy()
        part.add(x[lo:hi], ids[lo:hi])
        if n == 2:  # one source on disk itself, mapped read-only as a reader maps it
            (tmp_path / "s").mkdir()
            part.move_lists_to_disk(tmp_path / "s" / ON_DISK_FILE)
            part.save(tmp_path / "s" / VECTORS_FILE)
            part = VectorIndex.load(tmp_path / "s" / VECTORS_FILE, FACTORY, use_gpu=False)
        parts.append(part)
    dead = ids[::7]
    keep = np.setdiff1d(ids, dead)
    whole = template.empty_copy()
    whole.add(x, ids)
    whole.remove(dead.tolist())
    queries = x[::83]
    expected = whole.search(queries, 40, 16, 0)
    (tmp_path / "m").mkdir()
    for target in (tmp_path / "m" / ON_DISK_FILE, None):
        merged = template.empty_copy()
        merged.absorb(parts, keep, target)
        assert merged.on_disk == (target is not None) and merged.ntotal == len(keep)
        found = merged.search(queries, 40, 16, 0)
        assert np.array_equal(found[1], expected[1]) and np.array_equal(found[0], expected[0])
    assert parts[2].ntotal == 1500, "sources are read, never changed"
    empty = template.empty_copy()
    empty.absorb(parts, np.zeros(0, np.int64), tmp_path / "m" / "empty.ivfdata")
    assert empty.ntotal == 0 and not (tmp_path / "m" / "empty.ivfdata").exists()


def test_an_index_with_lists_on_disk_searches_writes_merges_and_checks_like_one_in_memory(make_engine, tmp_path):
    docs = _write(tmp_path / "docs", range(300))
    common = {"index.factory": "IVF8,PQ8", "index.train_sample": 300, "index.nprobe": 3, "index.max_segments": 10}
    disk = make_engine(**common, **{"index.path": str(tmp_path / "disk"), "index.ondisk_bytes": 1})
    memory = make_engine(**common, **{"index.path": str(tmp_path / "memory"), "index.ondisk_bytes": 0})
    for engine in (disk, memory):
        engine.index([docs])
    for part in (range(300, 340), range(340, 380)):
        _write(docs, part)
        for engine in (disk, memory):
            engine.index([docs])
    for engine in (disk, memory):
        engine.delete(["note-005.txt", "note-310.txt"])
    root = disk.store.segments_root
    with_lists = {s.name for s in disk.info().segments if (root / s.name / ON_DISK_FILE).is_file()}
    assert len(with_lists) == 3, "every segment holding vectors keeps its lists on disk"
    assert not list(memory.store.segments_root.rglob(ON_DISK_FILE))
    assert disk.info().files[ON_DISK_FILE] > 0
    queries = ["fault code F123 in hall 3", "forklift battery technician", "part P-42 logged", "loading dock"]

    def scored(engine, query: str) -> list[tuple[float, int]]:
        return sorted((-h.score, h.chunk_id) for h in engine.search(query, k=1000, mode="dense"))

    for query in queries:
        assert scored(disk, query) == scored(memory, query)
        assert [h.chunk_id for h in disk.search(query, k=5, filters=["source=*note-1*"])] == \
               [h.chunk_id for h in memory.search(query, k=5, filters=["source=*note-1*"])]
    assert disk.check().problems == []

    assert disk.compact() == memory.compact() == 2
    merged = disk.info().segments
    assert len(merged) == 1 and (root / merged[0].name / ON_DISK_FILE).is_file()
    for query in queries:
        assert scored(disk, query) == scored(memory, query)
    assert disk.check().problems == []

    # A lists file cut short is named when a reader opens it, not read past its end (SIGBUS).
    lists = root / merged[0].name / ON_DISK_FILE
    whole = lists.read_bytes()
    lists.write_bytes(whole[: len(whole) // 2])
    fresh = make_engine(**common, **{"index.path": str(tmp_path / "disk")})
    with pytest.raises(IndexCorruptError, match="vectors.ivfdata .* cut short"):
        fresh.search("loading dock", k=3, mode="dense")
    assert any(ON_DISK_FILE in problem for problem in fresh.check().problems)
    lists.write_bytes(whole)

    # `rag check` covers the lists file like every other file of a segment.
    lists = root / merged[0].name / ON_DISK_FILE
    data = bytearray(lists.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lists.write_bytes(bytes(data))
    assert any(ON_DISK_FILE in problem for problem in disk.check().problems)


def test_rag_index_json_stays_clean_while_faiss_writes_lists_to_disk(tmp_path, cli_env):
    """FAISS printf's a line to stdout each time an on-disk lists file grows."""
    docs = _write(tmp_path / "docs", range(300))
    env = {**cli_env, "RAG_INDEX_FACTORY": "IVF8,PQ8", "RAG_INDEX_TRAIN_SAMPLE": "300",
           "RAG_INDEX_ONDISK_BYTES": "1"}
    run = subprocess.run([sys.executable, "-m", "rag", "index", str(docs), "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["added"] == 300
    assert list(Path(cli_env["RAG_INDEX_PATH"]).rglob(ON_DISK_FILE))
    assert "resizing" in run.stderr
