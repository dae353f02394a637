"""Document identity across sources: collections, refusing silent replacement, --sync scoped to
the run's own sources, truncated streams, the mass-deletion guard, symbolic links, and indexes
written by the previous release. Real files, the real model, real FAISS."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import write_format1_index
from rag import RagError

def _folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def _ids(engine, question="document", k=50, filters=None) -> set[tuple[str, str]]:
    return {(h.metadata["collection"], h.doc_id) for h in engine.search(question, k=k, filters=filters)}


def test_a_second_folder_with_the_same_ids_is_refused_naming_both_files(make_engine, tmp_path):
    a = _folder(tmp_path / "a", {"README.md": "Alpha: the VPN gateway is vpn.alpha.example."})
    b = _folder(tmp_path / "b", {"README.md": "Beta: printers are on floor 3."})
    engine = make_engine()
    assert engine.index([a]).added == 1
    second = engine.index([b])
    assert (second.added, second.updated, second.failed) == (0, 0, 1)
    reason = second.problems[0].reason
    assert second.problems[0].path == str(b / "README.md")
    assert str(a / "README.md") in reason and "--collection NAME" in reason and "--replace" in reason
    assert second.exit_code() == 1
    assert engine.search("VPN gateway", k=1)[0].source == str(a / "README.md"), "a's document is untouched"

    # Its own collection keeps both; the collection is in every hit and filterable.
    other = make_engine(**{"ingest.collection": "beta"})
    assert other.index([b]).added == 1
    assert _ids(engine, "readme") == {("default", "README.md"), ("beta", "README.md")}
    only_beta = engine.search("readme", k=5, filters=["collection=beta"])
    assert [(h.metadata["collection"], h.source) for h in only_beta] == [("beta", str(b / "README.md"))]

    # Asked for, a replacement happens.
    replaced = engine.index([b], replace=True)
    assert (replaced.updated, replaced.failed) == (1, 0)
    default_hits = engine.search("readme", k=5, filters=["collection=default"])
    assert [h.source for h in default_hits] == [str(b / "README.md")]


def test_a_duplicate_id_within_one_run_names_both_folders(make_engine, tmp_path):
    a = _folder(tmp_path / "a", {"README.md": "Alpha readme."})
    b = _folder(tmp_path / "b", {"README.md": "Beta readme."})
    report = make_engine().index([a, b])
    assert (report.added, report.failed) == (1, 1)
    assert report.problems[0].path == str(b / "README.md")
    assert f"already read from {a / 'README.md'}" in report.problems[0].reason


def test_delete_of_an_id_in_two_collections_asks_which(make_engine, tmp_path):
    a = _folder(tmp_path / "a", {"README.md": "Alpha readme about the canteen."})
    b = _folder(tmp_path / "b", {"README.md": "Beta readme about parking."})
    engine = make_engine()
    engine.index([a])
    make_engine(**{"ingest.collection": "beta"}).index([b])
    with pytest.raises(RagError, match="in collections beta, default; say which with --collection"):
        engine.delete(["README.md"])
    assert engine.delete(["README.md"], collection="beta") == (["README.md"], [])
    assert _ids(engine, "readme") == {("default", "README.md")}


def test_sync_removes_only_what_this_run_s_folders_and_collection_held(make_engine, tmp_path):
    a = _folder(tmp_path / "a", {f"a{i}.md": f"Alpha document {i} about topic {i}." for i in range(4)})
    b = _folder(tmp_path / "b", {f"b{i}.md": f"Beta document {i} about subject {i}." for i in range(3)})
    c = _folder(tmp_path / "c", {f"a{i}.md": f"Gamma document {i}." for i in range(2)})
    engine = make_engine()
    engine.index([a])
    engine.index([b])
    records = "".join(json.dumps({"id": f"R-{i}", "text": f"Streamed document {i}."}) + "\n" for i in range(3))
    engine.index_jsonl(iter(records.encode().splitlines(True)), "stdin")
    make_engine(**{"ingest.collection": "gamma"}).index([c])

    (a / "a3.md").unlink()
    report = engine.index([a], sync=True)
    assert (report.deleted, report.unchanged, report.sync_stopped) == (1, 3, "")
    expected = {("default", f"a{i}.md") for i in range(3)} | {("default", f"b{i}.md") for i in range(3)} \
        | {("default", f"R-{i}") for i in range(3)} | {("gamma", f"a{i}.md") for i in range(2)}
    assert _ids(engine) == expected, "b/, the stream and the other collection keep every document"

    # A stream's sync reaches the collection's streamed records only, never files.
    again = engine.index_jsonl(iter(records.encode().splitlines(True)[:2]), "stdin", sync=True)
    assert (again.deleted, again.unchanged) == (1, 2)
    assert _ids(engine) == expected - {("default", "R-2")}


def test_a_cut_stream_syncs_nothing_and_mass_deletion_needs_confirmation(make_engine, tmp_path):
    engine = make_engine()
    lines = [(json.dumps({"id": f"R-{i}", "text": f"Record {i} of the nightly export."}) + "\n").encode()
             for i in range(9)]
    assert engine.index_jsonl(iter(lines), "stdin").added == 9

    # A producer killed mid-line: its last line has no newline (and is not even complete JSON).
    cut = engine.index_jsonl(iter([lines[0], lines[1][:20]]), "stdin", sync=True)
    assert (cut.deleted, cut.unchanged, cut.failed, cut.would_delete) == (0, 1, 1, 8)
    assert "stdin line 2" == cut.problems[0].path and "no newline" in cut.problems[0].reason
    assert "deleted nothing" in cut.sync_stopped and cut.exit_code() == 1
    # Killed right after a whole record: valid JSON, but still no newline.
    cut = engine.index_jsonl(iter([lines[0], lines[1].rstrip()]), "stdin", sync=True)
    assert (cut.deleted, cut.failed) == (0, 1)

    # Whole lines, but 8 of 9 gone: over index.sync_max_delete (50%), so nothing is deleted.
    stopped = engine.index_jsonl(iter(lines[:1]), "stdin", sync=True)
    assert (stopped.deleted, stopped.would_delete, stopped.exit_code()) == (0, 8, 1)
    assert "would delete 8 of the 9 documents" in stopped.sync_stopped
    assert "--max-delete 0.89" in stopped.sync_stopped
    assert len(engine.search("nightly export record", k=20)) == 9

    confirmed = make_engine(**{"index.sync_max_delete": 0.89}).index_jsonl(iter(lines[:1]), "stdin", sync=True)
    assert (confirmed.deleted, confirmed.exit_code()) == (8, 0)
    assert [h.doc_id for h in engine.search("nightly export record", k=20)] == ["R-0"]


def _linked_folder(tmp_path: Path) -> Path:
    outside = _folder(tmp_path / "outside", {"secret.txt": "The root password is hunter2."})
    docs = _folder(tmp_path / "docs", {"guide.md": "The guide explains the expense policy.",
                                       "sub/deep.txt": "Deep file about badge replacement."})
    (docs / "passwd.txt").symlink_to(outside / "secret.txt")
    (docs / "outside-dir").symlink_to(outside, target_is_directory=True)
    (docs / "alias.txt").symlink_to(docs / "sub" / "deep.txt")
    (docs / "sub" / "loop").symlink_to(docs, target_is_directory=True)
    (docs / "broken.txt").symlink_to(tmp_path / "nowhere.txt")
    return docs


def test_links_out_of_the_folder_are_skipped_with_a_message(make_engine, tmp_path):
    docs = _linked_folder(tmp_path)
    engine = make_engine()
    report = engine.index([docs])
    skipped = {Path(p.path).name: p.reason for p in report.problems}
    assert set(skipped) == {"passwd.txt", "outside-dir", "broken.txt", "loop"}
    assert "outside the indexed folder" in skipped["passwd.txt"] and "follow_symlinks" in skipped["passwd.txt"]
    assert "outside the indexed folder" in skipped["outside-dir"]
    assert "broken symbolic link" in skipped["broken.txt"]
    assert report.failed == 0 and report.skipped == 4
    assert all("hunter2" not in h.text for h in engine.search("root password", k=10))
    # A link inside the folder is followed, and its source is the file the text came from.
    hit = engine.search("badge replacement", k=1)[0]
    assert (hit.doc_id, hit.metadata["also_in"]) == ("alias.txt", ["sub/deep.txt"])
    assert hit.source == os.path.realpath(docs / "sub" / "deep.txt")


@pytest.mark.parametrize("policy, indexed", [
    ("never", {"guide.md", "sub/deep.txt"}),
    ("all", {"guide.md", "sub/deep.txt", "alias.txt", "passwd.txt", "outside-dir/secret.txt"}),
])
def test_follow_symlinks_never_and_all(make_engine, tmp_path, policy, indexed):
    from rag.ingest import discover

    docs = _linked_folder(tmp_path)
    engine = make_engine(**{"ingest.follow_symlinks": policy})
    found = discover([docs], engine.settings.ingest)
    assert {f.rel for f in found.files} == indexed
    if policy == "all":
        secret = next(f for f in found.files if f.rel == "passwd.txt")
        assert secret.source == str(tmp_path / "outside" / "secret.txt")
        assert any("folder above it" in reason for _, reason in found.skipped)


def test_an_index_of_the_previous_release_is_read_as_it_is_and_migrated_by_the_next_write(make_engine, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # indexed as `rag index docs` was, so sources read "docs/..."
    _folder(tmp_path / "docs", {
        "travel.md": "# Travel\n\nTrain tickets are reimbursed in second class.\n",
        "notes.txt": "The cafeteria opens at 07:45.\n", "notes-copy.txt": "The cafeteria opens at 07:45.\n",
        "faq.jsonl": json.dumps({"id": "faq-1", "title": "Badge",
                                 "text": "Lost badges are replaced at reception for 10 euros."}) + "\n"})
    index = write_format1_index(make_engine(**{"index.path": str(tmp_path / "index")}), Path("docs"))
    engine = make_engine(**{"index.path": str(index)})
    assert engine.info().manifest["format_version"] == 1
    assert engine.check().problems == []
    hit = engine.search("Which class are train tickets reimbursed in?", k=1)[0]
    assert (hit.doc_id, hit.metadata["collection"]) == ("travel.md", "default")
    cafeteria = engine.search("cafeteria opening time", k=1)[0]
    assert {cafeteria.doc_id, *cafeteria.metadata["also_in"]} == {"notes.txt", "notes-copy.txt"}

    # The same files, from the folder they were indexed from: unchanged, and now format 3, the
    # old version rewritten as one segment.
    report = engine.index([Path("docs")])
    assert (report.unchanged, report.added, report.updated, report.failed) == (4, 0, 0, 0)
    info = engine.info()
    assert info.manifest["format_version"] == 3 and len(info.segments) == 1 and engine.check().problems == []
    assert engine.search("cafeteria opening time", k=1)[0].metadata["also_in"]
    # Origins are known from now on: another folder's travel.md is refused.
    other = _folder(tmp_path / "other", {"travel.md": "Travel is booked through the portal."})
    assert engine.index([other]).failed == 1
    assert engine.delete(["faq-1"]) == (["faq-1"], [])
    assert engine.check().problems == []


def test_progress_counts_chunks_while_one_large_document_is_embedded(make_engine, tmp_path, monkeypatch):
    from rag.indexing import batches

    monkeypatch.setattr(batches, "EMBED_FLUSH_CHUNKS", 50)  # 512 in use: the same code, a smaller document
    docs = _folder(tmp_path / "docs", {"large.txt": " ".join(
        f"Sentence {i} of the large manual describes step {i} of the procedure." for i in range(400))})
    events: list[tuple[int, int, int]] = []

    class Recorder:
        def start(self, total_bytes, files):
            self.total = total_bytes

        def advance(self, nbytes, documents, chunks):
            events.append((nbytes, documents, chunks))

        def problem(self, problem):
            pass

    recorder = Recorder()
    engine = make_engine(**{"chunking.chunk_size": 32, "chunking.chunk_overlap": 0})
    report = engine.index([docs], progress=recorder)
    assert report.chunks > 150
    chunk_steps = [e for e in events if e[2]]
    first_document = next(i for i, e in enumerate(events) if e[1])
    assert len(chunk_steps) >= 3 and events.index(chunk_steps[1]) < first_document, \
        "chunks are counted while the one document is still being embedded"
    assert sum(e[2] for e in events) == report.chunks
    assert sum(e[0] for e in events) == recorder.total == os.path.getsize(docs / "large.txt")
