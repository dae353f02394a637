"""Incremental and batch indexing, deletes, deduplication and metadata filters, on real files,
the real model and real FAISS indexes of every kind."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rag.errors import ConfigError
from rag.filters import parse_filter
from rag.index import vectors as vectors_module

FACTORIES = ["Flat", "HNSW32", "IVF4,Flat"]


class CountingEmbedder:
    """The real embedder, counting the passages it is asked to embed."""

    def __init__(self, embedder):
        self._embedder = embedder
        self.passages = 0

    def __getattr__(self, name):
        return getattr(self._embedder, name)

    def embed_passages(self, texts, token_ids=None):
        self.passages += len(texts)
        return self._embedder.embed_passages(texts, token_ids)


def _tickets(root, n, departments=("ops",), start=0):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        dept = departments[i % len(departments)]
        (root / f"ticket-{i:03d}.jsonl").write_text(json.dumps(
            {"id": f"T-{i:03d}", "text": f"Ticket {i}: the conveyor in aisle {i} reports fault F{i:03d}.",
             "metadata": {"department": dept, "priority": i % 5, "opened": f"2026-{1 + i % 12:02d}-15"}}) + "\n")
    return root


@pytest.fixture
def counting(embedder):
    return CountingEmbedder(embedder)


def test_rerun_embeds_nothing_changed_document_replaces_chunks_sync_and_delete(make_settings, counting, tmp_path):
    from rag import Engine

    docs = _tickets(tmp_path / "docs", 30)
    engine = Engine(make_settings(), embedder=counting)
    first = engine.index([docs])
    assert (first.added, first.updated, first.unchanged) == (30, 0, 0)
    embedded = counting.passages
    again = engine.index([docs])
    assert (again.added, again.updated, again.unchanged) == (0, 0, 30)
    assert counting.passages == embedded, "an unchanged document must cost no embedding work"
    assert again.version == first.version, "nothing changed, so no new version"

    (docs / "ticket-003.jsonl").write_text(json.dumps({"id": "T-003", "text": "Ticket 3 closed: belt replaced."}))
    (docs / "ticket-004.jsonl").unlink()
    changed = engine.index([docs], sync=True)
    assert (changed.added, changed.updated, changed.unchanged, changed.deleted) == (0, 1, 28, 1)
    assert counting.passages == embedded + 1
    counts = engine.info().manifest["counts"]
    assert counts["documents"] == 29 and counts["chunks"] == 29
    assert all("F003" not in h.text for h in engine.search("fault F003 aisle 3", k=29))
    assert "T-004" not in {h.doc_id for h in engine.search("fault F004 aisle 4", k=29)}

    deleted, missing = engine.delete(["T-005", "no-such-id"])
    assert (deleted, missing) == (["T-005"], ["no-such-id"])
    assert engine.info().manifest["counts"]["documents"] == 28
    assert engine.check().problems == []


def test_sync_keeps_what_a_failing_file_had_indexed(make_engine, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nThe Lisbon office opens at 8:00.")
    (docs / "b.jsonl").write_text(json.dumps({"id": "b-1", "text": "Parking is on level -2."}) + "\n")
    engine = make_engine()
    engine.index([docs])
    (docs / "b.jsonl").write_text("{not json\n")
    report = engine.index([docs], sync=True)
    assert report.failed == 1 and report.deleted == 0
    assert "b-1" in {h.doc_id for h in engine.search("parking level", k=3)}
    (docs / "b.jsonl").unlink()
    assert engine.index([docs], sync=True).deleted == 1


def test_a_repeated_id_in_one_stream_fails_that_record_naming_both_lines_and_sync_keeps_it(make_engine):
    lines = [json.dumps({"id": i, "text": t}).encode() + b"\n" for i, t in
             (("A", "Alpha invoices are paid within 30 days."), ("B", "Beta orders ship on Mondays."),
              ("A", "A different text under a repeated id."))]
    engine = make_engine()
    report = engine.index_jsonl(iter(lines), name="nightly.jsonl")
    assert (report.added, report.failed) == (2, 1)
    assert report.problems[0].path == "nightly.jsonl line 3"
    assert "duplicate document id 'A' (already read from nightly.jsonl line 1)" in report.problems[0].reason
    assert "30 days" in engine.search("when are alpha invoices paid", k=1)[0].text, "the first record stands"
    again = engine.index_jsonl(iter(lines[:2]), name="nightly.jsonl", sync=True)
    assert (again.unchanged, again.deleted) == (2, 0), "ids read in this run are not removed by --sync"


def test_seen_ids_spill_to_disk_instead_of_growing_in_memory():
    from rag.indexing import SeenIds

    seen = SeenIds()
    try:
        for i in range(100_000):
            assert seen.add(f"doc-{i:08d}", f"stdin line {i + 1}") is None
        assert seen.add("doc-00000007", "stdin line 100001") == "stdin line 8"
        assert "doc-00099999" in seen and "doc-x" not in seen
        db = seen._db
        stored_kib = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0] / 1024
        cache_kib = -db.execute("PRAGMA cache_size").fetchone()[0]  # negative: a size in KiB
        assert stored_kib > cache_kib, "the ids outgrew SQLite's bounded page cache, so the rest lives on disk"
    finally:
        seen.close()


def test_seen_ids_that_cannot_be_kept_on_disk_are_a_clear_error_and_leave_nothing_behind(tmp_path):
    from rag.errors import RagError
    from rag.indexing import SeenIds

    not_a_folder = tmp_path / "scratch"
    not_a_folder.write_text("a file where the temporary folder should be")
    with pytest.raises(RagError, match=r"temporary file under .*scratch.*TMPDIR.*index is unchanged"):
        SeenIds(str(not_a_folder))
    seen = SeenIds(str(tmp_path))
    folder = seen.folder
    seen.close()
    assert list(tmp_path.iterdir()) == [not_a_folder], f"{folder} was removed on close"


def test_identical_content_under_two_ids_is_stored_once_and_found_under_both(make_settings, counting, tmp_path):
    from rag import Engine

    docs = tmp_path / "docs"
    docs.mkdir()
    text = "# Expenses\n\nMeals abroad are reimbursed up to 45 euros a day with receipts."
    (docs / "policy.md").write_text(text)
    (docs / "copy-of-policy.md").write_text(text)
    (docs / "other.md").write_text("# Badges\n\nLost badges are replaced at reception.")
    engine = Engine(make_settings(), embedder=counting)
    report = engine.index([docs])
    assert report.added == 3 and report.deduplicated == 0  # the copy came in the same batch
    counts = engine.info().manifest["counts"]
    assert counts["documents"] == 3 and counts["chunks"] == 2, "the copy's chunks are stored once"
    hits = engine.search("meal allowance abroad", k=5)
    assert len([h for h in hits if "45 euros" in h.text]) == 1, "no duplicate passages"
    top = hits[0]
    assert {top.doc_id, *top.metadata["also_in"]} == {"policy.md", "copy-of-policy.md"}
    for doc_id in ("policy.md", "copy-of-policy.md"):
        found = engine.search("meal allowance abroad", k=5, filters=[f"doc_id={doc_id}"])
        assert found and "45 euros" in found[0].text
    # A later copy costs no embedding either.
    before = counting.passages
    (docs / "third-copy.md").write_text(text)
    assert engine.index([docs]).deduplicated == 1 and counting.passages == before
    # Deleting the document that holds the chunks hands them to a copy.
    holder = engine.search("meal allowance abroad", k=1)[0].doc_id
    engine.delete([holder])
    hits = engine.search("meal allowance abroad", k=1)
    assert "45 euros" in hits[0].text and hits[0].doc_id != holder
    assert engine.info().manifest["counts"]["chunks"] == 2
    assert engine.check().problems == []


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("exact_limit", [20_000, 0])
def test_a_filter_matching_one_percent_still_returns_k_results(make_engine, tmp_path, factory, exact_limit,
                                                               monkeypatch):
    # exact_limit 0 forces the FAISS ID-selector path (and its exact fallback) instead of exact scoring.
    monkeypatch.setattr(vectors_module, "EXACT_SEARCH_LIMIT", exact_limit)
    docs = _tickets(tmp_path / "docs", 500, departments=("ops",) * 99 + ("legal",))
    engine = make_engine(**{"index.factory": factory, "index.train_sample": 256})
    engine.index([docs])
    hits = engine.search("conveyor fault", k=5, filters=["department=legal"])
    assert len(hits) == 5, "5 legal tickets exist, so 5 must come back"
    assert {h.metadata.get("department") for h in hits} <= {"legal"}
    assert {h.doc_id for h in hits} == {f"T-{i:03d}" for i in range(99, 500, 100)}
    # Unfiltered, the top 5 is all ops: filtering after the search would have found nothing.
    assert all(h.metadata.get("department") != "legal" for h in engine.search("conveyor fault aisle 12", k=5))


def test_filter_forms_glob_ranges_dates_and_errors(make_engine, tmp_path):
    docs = _tickets(tmp_path / "docs", 40, departments=("ops", "legal"))
    engine = make_engine()
    engine.index([docs])
    by = lambda *f: {h.doc_id for h in engine.search("conveyor fault", k=40, filters=list(f))}  # noqa: E731
    assert by("source=*ticket-01?.jsonl") == {f"T-{i:03d}" for i in range(10, 20)}
    assert by("priority>=4") == {f"T-{i:03d}" for i in range(40) if i % 5 >= 4}
    assert by("priority=1..2", "department=legal") == {f"T-{i:03d}" for i in range(40) if i % 5 in (1, 2) and i % 2}
    assert by("opened>=2026-11-01") == {f"T-{i:03d}" for i in range(40) if 1 + i % 12 >= 11}
    assert by("mtime>=2000-01-01") == {f"T-{i:03d}" for i in range(40)}
    assert by("mtime<2000-01-01") == set()
    assert by("department=nobody") == set()
    with pytest.raises(ConfigError, match="--filter 'department'"):
        parse_filter("department")
    with pytest.raises(ConfigError, match="not a valid date"):
        parse_filter("opened>=2026-13-45")


def test_rag_index_jsonl_from_stdin_delete_check_and_json_report(cli_env, tmp_path):
    records = "".join(json.dumps({"id": f"R-{i}", "text": f"Record {i} is about invoice INV-{i:04d}.",
                                  "metadata": {"team": "finance" if i % 2 else "sales"}}) + "\n" for i in range(20))
    rag = [sys.executable, "-m", "rag"]
    done = subprocess.run([*rag, "index", "--jsonl", "-", "--json"], input=records + "{broken\n", env=cli_env,
                          capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    assert done.returncode == 1, "one record failed"
    assert {k: report[k] for k in ("added", "updated", "unchanged", "deleted", "skipped", "failed")} == \
        {"added": 20, "updated": 0, "unchanged": 0, "deleted": 0, "skipped": 0, "failed": 1}
    assert "stdin line 21" in done.stderr
    again = subprocess.run([*rag, "index", "--jsonl", "-", "--json", "--sync"], input="".join(records.splitlines(True)[:-1]),
                           env=cli_env, capture_output=True, text=True, timeout=300)
    assert json.loads(again.stdout)["unchanged"] == 19 and json.loads(again.stdout)["deleted"] == 1, again.stderr
    found = subprocess.run([*rag, "search", "invoice", "--filter", "team=finance", "-k", "20", "--json"],
                           env=cli_env, capture_output=True, text=True, timeout=300)
    assert {h["doc_id"] for h in json.loads(found.stdout)} == {f"R-{i}" for i in range(1, 19, 2)}
    gone = subprocess.run([*rag, "delete", "R-1", "R-99"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert gone.returncode == 1 and "not found: R-99" in gone.stderr and "1 documents deleted" in gone.stdout
    check = subprocess.run([*rag, "check", "--json"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and json.loads(check.stdout) == {"ok": True, "problems": []}
    both = subprocess.run([*rag, "index", "x", "--jsonl", "-"], env=cli_env, capture_output=True, text=True)
    assert both.returncode == 2


def test_masked_ids_are_never_returned_and_compaction_is_reported(make_engine, tmp_path):
    docs = _tickets(tmp_path / "docs", 50)
    engine = make_engine(**{"index.factory": "HNSW32"})
    engine.index([docs])
    deleted, _ = engine.delete([f"T-{i:03d}" for i in range(0, 50, 2)])
    assert len(deleted) == 25 and engine.info().masked == 25
    ids = {h.doc_id for h in engine.search("conveyor fault", k=50)}
    assert ids == {f"T-{i:03d}" for i in range(1, 50, 2)}, "masked vectors never come back, and k is still met"
    assert engine.compact() == 25 and engine.info().masked == 0
    reader = engine.reader()
    assert len(reader.segments) == 1
    assert np.array_equal(np.sort(reader.segments[0].vectors.contains_ids()),
                          np.sort(np.fromiter(reader.chunks.rows.chunk_ids(), dtype=np.int64)))
