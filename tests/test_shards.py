"""index.shards: a large Flat or IVF segment searched as shards on several threads gives the
hits of the whole index: the same chunks, the same scores, with filters and deletions."""

import numpy as np
import pytest

import rag.index.shards as shards
from rag.index.shards import ShardedIndex

from test_segments import _write


def _hits(engine, query, **kwargs):
    return sorted((-round(h.score, 5), h.chunk_id) for h in engine.search(query, mode="dense", **kwargs))


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat"])
def test_a_sharded_segment_finds_what_the_whole_index_finds(make_engine, tmp_path, monkeypatch, factory):
    monkeypatch.setattr(shards, "MIN_SHARD_VECTORS", 10)
    docs = _write(tmp_path / "docs", range(400))
    settings = {"index.factory": factory, "index.train_sample": 400, "index.nprobe": 3}
    whole = make_engine(**settings)
    whole.index([docs])
    whole.delete(["note-007.txt", "note-123.txt"])  # tombstones: skipped inside every shard
    sharded = make_engine(**settings, **{"index.shards": 3})
    reader = sharded.reader()
    split = [s.vectors for s in reader.segments if isinstance(s.vectors, ShardedIndex)]
    assert len(split) == 1 and len(split[0].shards) == 3
    assert sorted(split[0].contains_ids().tolist()) == sorted(whole.reader().segments[0].ids.tolist())
    assert sum(shard.ntotal for shard in split[0].shards) == whole.reader().vector_count
    compared = 0
    for query in ("forklift battery fault in hall 2", "technician 3 logged part P-40", "fault code F007"):
        for filters in (None, ["source=*note-1*"]):
            for k in (5, 40):
                a, b = _hits(whole, query, k=k, filters=filters), _hits(sharded, query, k=k, filters=filters)
                assert a == b, (query, filters, k)
                compared += len(a)
    assert compared > 200
    assert not {h.doc_id for h in sharded.search("fault code F007", k=400, mode="dense")} & {"note-007.txt"}
    assert sharded.check().problems == []
    ids = np.sort(whole.reader().segments[0].ids)[:50]
    assert np.array_equal(split[0].reconstruct(ids), whole.reader().segments[0].vectors.reconstruct(ids))


def test_small_segments_and_hnsw_are_not_split(make_engine, tmp_path, monkeypatch):
    docs = _write(tmp_path / "docs", range(40))
    small = make_engine(**{"index.shards": 4, "index.path": str(tmp_path / "flat")})
    small.index([docs])  # 40 vectors: under MIN_SHARD_VECTORS per shard
    small.reader()
    monkeypatch.setattr(shards, "MIN_SHARD_VECTORS", 1)
    hnsw = make_engine(**{"index.factory": "HNSW32", "index.shards": 4, "index.path": str(tmp_path / "hnsw")})
    hnsw.index([docs])  # an HNSW graph cannot be split
    for engine in (small, hnsw):
        assert not any(isinstance(s.vectors, ShardedIndex) for s in engine.reader().segments)
        assert engine.search("forklift battery", k=1, mode="dense")
