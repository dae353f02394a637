"""An index of immutable segments: a write adds one, tombstones hide what it replaced or deleted,
searches see the whole version with whole-version BM25 statistics, merges keep the count bounded."""

import os
from pathlib import Path

import numpy as np
import pytest

from rag import Engine
from rag.index.views import SEGMENT_MMAP_BYTES

TOPICS = ["conveyor belt", "forklift battery", "loading dock", "badge reader", "freight elevator",
          "pallet wrapper", "cold storage", "sorting robot"]


def _write(folder: Path, names: range, prefix: str = "note") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in names:
        topic = TOPICS[i % len(TOPICS)]
        (folder / f"{prefix}-{i:03d}.txt").write_text(
            f"Ticket {i} about the {topic}: the {topic} in hall {i % 5} reports fault code F{i:03d}. "
            f"Technician {i % 7} checked the {topic} and logged part P-{i * 13 % 97}.\n", encoding="utf-8")
    return folder


def _segment_files(engine: Engine) -> dict[str, tuple[int, int]]:
    root = engine.store.segments_root
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_a_write_adds_a_segment_and_leaves_the_older_ones_untouched(make_engine, tmp_path):
    docs = _write(tmp_path / "docs", range(40))
    engine = make_engine()
    engine.index([docs])
    before = _segment_files(engine)
    _write(docs, range(40, 41))
    report = engine.index([docs])
    assert report.added == 1
    after = _segment_files(engine)
    assert {k: v for k, v in after.items() if k in before} == before, "older segments are never rewritten"
    info = engine.info()
    assert [s.chunks for s in info.segments] == [40, 1]
    new_bytes = sum((engine.store.segments_root / f).stat().st_size for f in set(after) - set(before))
    assert new_bytes < 200_000  # the new document's rows, vector and postings, not a copy of the index
    assert engine.search("fault code F040", k=1, mode="bm25")[0].doc_id == "note-040.txt"
    assert engine.check().problems == []


def test_replacing_and_deleting_documents_of_older_segments_hides_them_everywhere(make_engine, tmp_path):
    docs = _write(tmp_path / "docs", range(30))
    engine = make_engine()
    engine.index([docs])
    (docs / "note-007.txt").write_text("Ticket 7 was closed: the mezzanine gate hinge was replaced.\n")
    assert engine.index([docs]).updated == 1
    assert engine.delete(["note-011.txt"]) == (["note-011.txt"], [])
    for mode in ("dense", "bm25", "hybrid"):
        hits = engine.search("fault code F007 F011", k=30, mode=mode)
        assert not [h for h in hits if "F007" in h.text or "F011" in h.text], mode
        assert engine.search("mezzanine gate hinge", k=1, mode=mode)[0].doc_id == "note-007.txt"
    listed = engine.documents(limit=100)
    assert listed.total == 29 and "note-011.txt" not in {d.doc_id for d in listed.documents}
    assert engine.facets().documents == 29
    counts = engine.info().manifest["counts"]
    assert (counts["documents"], counts["chunks"], counts["masked"]) == (29, 29, 2)
    assert engine.check().problems == []
    assert engine.document("note-007.txt")[0].chunks[0].text.startswith("Ticket 7 was closed")
    assert engine.document("note-011.txt") == []


def test_bm25_scores_do_not_depend_on_how_the_writes_were_split(make_engine, tmp_path):
    """BM25 statistics are the whole version's: three writes score exactly as one does."""
    docs = _write(tmp_path / "docs", range(48))
    one = make_engine(**{"index.path": str(tmp_path / "one")})
    one.index([docs])
    split = make_engine(**{"index.path": str(tmp_path / "split")})
    for part in (range(0, 16), range(16, 32), range(32, 48)):
        part_docs = tmp_path / f"part-{part.start}"
        part_docs.mkdir()
        for i in part:
            (part_docs / f"note-{i:03d}.txt").write_bytes((docs / f"note-{i:03d}.txt").read_bytes())
        split.index([part_docs])
    assert len(split.info().segments) == 3
    for query in ("forklift battery fault", "technician checked the loading dock", "part P-13 hall 2", "F033"):
        for mode in ("bm25", "dense", "hybrid"):
            a = [(h.doc_id, round(h.score, 5)) for h in one.search(query, k=10, mode=mode)]
            b = [(h.doc_id, round(h.score, 5)) for h in split.search(query, k=10, mode=mode)]
            assert a == b, (query, mode)


def test_merges_keep_at_most_max_segments_and_drop_what_tombstones_hide(make_engine, tmp_path):
    docs = tmp_path / "docs"
    engine = make_engine(**{"index.max_segments": 3})
    for write in range(7):
        _write(docs, range(write * 5, write * 5 + 5))
        if write >= 2:  # replace one document of an older write each time
            (docs / f"note-{write:03d}.txt").write_text(f"Ticket {write} reopened: ceiling leak over dock {write}.\n")
        engine.index([docs])
        info = engine.info()
        assert len(info.segments) <= 3
        assert engine.check().problems == []
    assert info.manifest["counts"]["documents"] == 35
    assert sum(s.chunks for s in info.segments) >= 35
    hits = engine.search("ceiling leak", k=10, mode="bm25")
    assert {h.doc_id for h in hits} == {f"note-{i:03d}.txt" for i in range(2, 7)}
    assert not [h for h in engine.search("fault code F004", k=35, mode="bm25") if "F004" in h.text]
    assert engine.compact() == engine.info().masked or engine.info().masked == 0
    info = engine.info()
    assert len(info.segments) == 1 and info.masked == 0 and info.segments[0].chunks == 35
    # Segments no version names any more are gone from the disk.
    assert sorted(p.name for p in engine.store.segments_root.iterdir()) == \
        sorted({s["name"] for v in engine.store.versions()
                for s in __import__("json").loads((engine.store.path / v / "manifest.json").read_text())["segments"]})
    assert engine.check().problems == []


def test_a_document_sharing_its_content_takes_over_the_chunks_of_a_deleted_one_in_an_older_segment(
        make_engine, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The loading dock closes at 17:00 on Fridays.\n")
    engine = make_engine()
    engine.index([docs])
    (docs / "b.txt").write_text("The loading dock closes at 17:00 on Fridays.\n")
    engine.index([docs])  # b.txt is an alias of a.txt, which the first segment holds
    assert engine.search("When does the loading dock close?", k=1)[0].metadata["also_in"] == ["b.txt"]
    assert engine.delete(["a.txt"]) == (["a.txt"], [])
    for mode in ("dense", "bm25"):
        hit = engine.search("When does the loading dock close?", k=1, mode=mode)[0]
        assert hit.doc_id == "b.txt" and "also_in" not in hit.metadata, mode
    assert engine.check().problems == []
    assert engine.compact() >= 1 and engine.search("loading dock", k=1)[0].doc_id == "b.txt"
    assert engine.check().problems == []


def test_a_reader_keeps_the_version_it_opened_while_merges_delete_its_segments(make_engine, tmp_path):
    docs = _write(tmp_path / "docs", range(12))
    engine = make_engine(**{"index.keep_versions": 0})
    engine.index([docs])
    _write(docs, range(12, 14))
    engine.index([docs])
    reader = engine.store.open_reader()
    # Read through a memory map (no pread per page), which outlives the files' deletion below.
    assert reader.chunks.conn.execute("PRAGMA s0.mmap_size").fetchone()[0] == SEGMENT_MMAP_BYTES
    engine.delete(["note-003.txt"])
    engine.compact()  # one segment now; the reader's two are deleted from the disk
    assert len(engine.info().segments) == 1
    assert not (engine.store.segments_root / reader.segments[0].name).exists()
    vectors = engine.embedder.embed_queries(["fault code F003"])
    found = reader.search(vectors, 14)
    rows = reader.chunks.rows.get_chunks([cid for cid, _ in found[0]])
    assert any("F003" in row.text for row in rows.values()), "the old snapshot still holds note-003"
    ids, _ = reader.lexical.search("F003", 3)
    assert len(ids)
    reader.close()


@pytest.mark.parametrize("factory", ["HNSW32", "IVF4,Flat"])
def test_segments_of_other_index_types_share_one_training_and_merge(make_engine, tmp_path, factory):
    docs = _write(tmp_path / "docs", range(260))
    engine = make_engine(**{"index.factory": factory, "index.train_sample": 256, "index.max_segments": 2})
    engine.index([docs])
    for i in range(3):
        _write(docs, range(260 + i, 261 + i))
        engine.index([docs])
    info = engine.info()
    assert len(info.segments) <= 2 and engine.check().problems == []
    if factory.startswith("IVF"):
        template = info.manifest["template"]
        assert template and (engine.store.segments_root / template / "trained.faiss").is_file()
    assert engine.search("fault code F262", k=1, mode="dense")[0].doc_id in {f"note-{i:03d}.txt" for i in range(263)}
    assert engine.search("F262", k=1, mode="bm25")[0].doc_id == "note-262.txt"


def test_check_finds_a_damaged_segment_and_a_document_live_twice(make_engine, tmp_path):
    import json
    import sqlite3

    docs = _write(tmp_path / "docs", range(6))
    engine = make_engine()
    engine.index([docs])
    _write(docs, range(6, 8))
    engine.index([docs])
    root = engine.store.segments_root
    manifest_path = engine.store.path / engine.store.current_version() / "manifest.json"
    second = json.loads(manifest_path.read_text())["segments"][1]["name"]
    # A row of the first segment copied into the second without its tombstone.
    database = root / second / "chunks.sqlite"
    os.chmod(database, 0o644)
    with sqlite3.connect(root / "s000001" / "chunks.sqlite") as first, sqlite3.connect(database) as conn:
        row = first.execute("SELECT * FROM documents WHERE doc_id = 'note-001.txt'").fetchone()
        columns = [c[1] for c in first.execute("PRAGMA table_info(documents)")]
        conn.execute(f"INSERT INTO documents ({', '.join(columns)}) VALUES ({', '.join('?' * len(row))})", row)
    problems = Engine(engine.settings, embedder=engine.embedder).check().problems
    assert any(f"{second}/chunks.sqlite: size or checksum differs" in p for p in problems), problems
    manifest = json.loads(manifest_path.read_text())
    from rag.index.segments import file_digest

    manifest["segments"][1]["files"]["chunks.sqlite"] = file_digest(database)
    manifest_path.write_text(json.dumps(manifest))
    problems = Engine(engine.settings, embedder=engine.embedder).check().problems
    assert any("live in two segments" in p for p in problems), problems


def test_vectors_are_the_ones_a_single_write_makes(make_engine, tmp_path):
    """Merging copies vectors exactly (reconstructed from FAISS, not re-embedded)."""
    docs = _write(tmp_path / "docs", range(10))
    engine = make_engine(**{"index.max_segments": 1})
    engine.index([docs])
    first = engine.reader().segments[0]
    before = first.vectors.reconstruct(first.ids)
    _write(docs, range(10, 12))
    engine.index([docs])  # merged into one segment at once
    merged = engine.reader().segments[0]
    assert len(engine.reader().segments) == 1 and len(merged.ids) == 12
    assert np.array_equal(merged.vectors.reconstruct(first.ids), before)


def test_a_new_version_reuses_the_segments_a_reader_already_loaded(make_engine, tmp_path):
    """After a write, the server loads only the new segment, not every segment's vectors again."""
    docs = _write(tmp_path / "docs", range(10))
    engine = make_engine()
    engine.index([docs])
    first = engine.reader().segments[0]
    _write(docs, range(10, 11))
    engine.index([docs])
    segments = engine.reader().segments
    assert len(segments) == 2 and segments[0] is first
    assert engine.search("fault code F010", k=1, mode="bm25")[0].doc_id == "note-010.txt"


def test_the_most_segments_sqlite_can_read_together_still_merge(make_engine, tmp_path):
    """With index.max_segments 10, a write makes an eleventh segment before merging: one more
    than SQLite attaches at once. The merge reads them one at a time."""
    docs = tmp_path / "docs"
    engine = make_engine(**{"index.max_segments": 10})
    for write in range(12):
        _write(docs, range(write, write + 1))
        if write == 6:
            (docs / "note-002.txt").unlink()
            engine.delete(["note-002.txt"])
        engine.index([docs])
        assert len(engine.info().segments) <= 10
    assert engine.check().problems == [] and engine.info().manifest["counts"]["documents"] == 11
    assert engine.search("F011", k=1, mode="bm25")[0].doc_id == "note-011.txt"
    assert not [h for h in engine.search("F002", k=11, mode="bm25") if "F002" in h.text]


def test_small_segments_searched_as_one_rank_exactly_as_searched_one_by_one(make_engine, tmp_path, monkeypatch):
    """A reader joins small flat segments (one FAISS search and one BM25 postings lookup instead of
    one per segment); with tombstones, an update, a shared content and filters, the hits are the
    same as when each segment is searched alone."""
    import rag.index.segments as segments

    docs = _write(tmp_path / "docs", range(24))
    engine = make_engine(**{"index.max_segments": 10})
    engine.index([docs])
    for part in (range(24, 30), range(30, 36)):
        _write(docs, part)
        engine.index([docs])
    (docs / "note-003.txt").write_text("Ticket 3 was closed: the forklift battery charger was swapped.\n")
    (docs / "copy-of-note-031.txt").write_bytes((docs / "note-031.txt").read_bytes())
    engine.index([docs])
    engine.delete(["note-012.txt", "note-026.txt"])
    joined = engine.reader()
    assert len(joined.segments) >= 4 and len(joined._searched) == 1
    monkeypatch.setattr(segments, "SMALL_SEGMENT_BYTES", 0)
    one_by_one = make_engine(**{"index.max_segments": 10})
    alone = one_by_one.reader()
    assert len(alone._searched) == len(alone.segments) == len(joined.segments)
    assert not joined.on_gpu and not alone.on_gpu  # index.device auto, and faiss-cpu here
    assert joined._searched[0].ids.tolist() == np.setdiff1d(np.concatenate([s.ids for s in alone.segments]),
                                                            joined.masked).tolist()
    compared = 0
    for query in ("forklift battery charger", "fault code F031 in hall 1", "technician checked the pallet wrapper"):
        for mode in ("dense", "bm25", "hybrid"):
            for where in (None, ["source=*note-03*"], ["source=*note-00*"]):
                a, b = (e.search(query, k=40, mode=mode, filters=where) for e in (engine, one_by_one))
                # Equal but for the last bits: a filter's exact scoring multiplies other batches of vectors.
                assert [(h.doc_id, h.metadata.get("also_in")) for h in a] == \
                    [(h.doc_id, h.metadata.get("also_in")) for h in b], (query, mode, where)
                assert np.allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-6)
                compared += len(a)
    assert compared > 300
    # The rows too: listings, facets, filters and documents read the same through the joined copy.
    assert engine.documents(limit=100) == one_by_one.documents(limit=100)
    assert engine.documents(["source=*note-03*"]) == one_by_one.documents(["source=*note-03*"])
    assert engine.facets() == one_by_one.facets()
    for doc_id in ("note-003.txt", "copy-of-note-031.txt", "note-031.txt", "note-012.txt"):
        assert engine.document(doc_id) == one_by_one.document(doc_id)
    assert engine.check().problems == [] and one_by_one.check().problems == []


def test_merging_ivf_pq_segments_moves_their_codes_unchanged(make_engine, tmp_path):
    """A merge of IVF-PQ segments moves the stored codes list by list, less the deleted vectors:
    every search scores exactly as before it."""
    docs = _write(tmp_path / "docs", range(300))
    engine = make_engine(**{"index.factory": "IVF8,PQ8", "index.train_sample": 300, "index.nprobe": 3,
                            "index.max_segments": 10})
    engine.index([docs])
    for part in (range(300, 340), range(340, 380)):
        _write(docs, part)
        engine.index([docs])
    engine.delete(["note-005.txt", "note-310.txt"])
    assert len(engine.info().segments) == 4
    queries = ["fault code F123 in hall 3", "forklift battery technician", "part P-42 logged", "loading dock"]
    def scored(query: str) -> list[tuple[float, int]]:
        # Every candidate of the probed lists (PQ scores tie often: order them by id too).
        return sorted((-h.score, h.chunk_id) for h in engine.search(query, k=1000, mode="dense"))

    before = [scored(q) for q in queries]
    assert engine.compact() == 2  # the two deleted documents' vectors
    assert len(engine.info().segments) == 1 and engine.check().problems == []
    after = [scored(q) for q in queries]
    assert after == before and min(len(found) for found in after) > 50
