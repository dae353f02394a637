"""Folder access lists (`.ragacl`, issue 33): inherited by subfolders, the nearest one winning;
a malformed one failing closed; and a change of a list alone (a `.ragacl` edited, a record's `acl`)
rewriting only the documents' rows, with nothing embedded again. Real files, the real bundled
model, real FAISS."""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from rag import Engine
from rag.errors import IngestError
from rag.filters import Access
from rag.ingest.ragacl import ACL_FILE, read_acl_file

ALICE = Access("alice", ("hr",))
BOB = Access("bob", ("staff",))
STRANGER = Access("nobody")
PHRASE = "the quarterly travel policy"


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


@pytest.fixture
def counting(embedder):
    return CountingEmbedder(embedder)


@pytest.fixture
def engine(make_settings, counting):
    engine = Engine(make_settings(), embedder=counting)
    yield engine
    engine.close()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _acl(folder: Path, value) -> None:
    _write(folder / ACL_FILE, json.dumps(value))


def _tree(root: Path) -> Path:
    """kb (staff) > hr (hr) > cases (inherits hr) > notices (public); kb > board (bob only)."""
    _acl(root, {"groups": ["staff"]})
    _write(root / "general.txt", f"General note on {PHRASE} for every employee.")
    _acl(root / "hr", {"groups": ["hr"]})
    _write(root / "hr" / "salaries.txt", f"Salary bands and {PHRASE} for HR.")
    _write(root / "hr" / "cases" / "case-7.txt", f"Case 7 mentions {PHRASE} and an appeal.")
    _acl(root / "hr" / "cases" / "notices", "public")
    _write(root / "hr" / "cases" / "notices" / "notice.txt", f"Public notice about {PHRASE}.")
    _acl(root / "board", {"users": ["bob"]})
    _write(root / "board" / "deck.txt", f"Board deck: {PHRASE} and the budget.")
    _write(root / "hr" / "people.jsonl", "".join(json.dumps(r) + "\n" for r in [
        {"id": "own-list", "text": f"Carol's review, under {PHRASE}.", "acl": {"users": ["carol"]}},
        {"id": "folder-list", "text": f"Team roster, under {PHRASE}."}]))
    return root


def _visible(engine: Engine, access: Access) -> set[str]:
    """What a person finds by searching (k larger than the index) and by listing: both must agree."""
    found = {h.doc_id for h in engine.search(PHRASE, k=50, mode="bm25", access=access)}
    listed = {d.doc_id for d in engine.documents(access=access, limit=1000).documents}
    assert found == listed
    return found


def _vectors(engine: Engine) -> int:
    return engine.info().manifest["counts"]["vectors"]


def test_nested_folders_inherit_their_list_and_the_nearest_ragacl_wins_without_merging(engine, tmp_path):
    kb = _tree(tmp_path / "kb")
    report = engine.index([kb])
    assert report.added == 7 and report.failed == 0 and report.skipped == 0
    listed = {d.doc_id: d.metadata.get("acl") for d in engine.documents(limit=100).documents}
    assert not any(ACL_FILE in doc_id for doc_id in listed), "a .ragacl is never a document"
    assert listed["hr/cases/case-7.txt"] == {"groups": ["hr"], "users": []}, "inherited from hr/.ragacl"
    assert listed["own-list"] == {"groups": [], "users": ["carol"]}, "a record's own list is nearer"
    assert listed["folder-list"] == {"groups": ["hr"], "users": []}, "a record without one takes its folder's"
    hr_side = {"hr/salaries.txt", "hr/cases/case-7.txt", "folder-list"}
    # alice is in hr, not in staff: hr's list replaces kb's, it does not add to it.
    assert _visible(engine, ALICE) == hr_side | {"hr/cases/notices/notice.txt"}
    assert _visible(engine, BOB) == {"general.txt", "board/deck.txt", "hr/cases/notices/notice.txt"}
    assert _visible(engine, STRANGER) == {"hr/cases/notices/notice.txt"}
    assert _visible(engine, Access("carol")) == {"own-list", "hr/cases/notices/notice.txt"}


def test_a_folder_indexed_alone_keeps_the_list_of_the_ragacl_above_it(engine, tmp_path):
    kb = _tree(tmp_path / "kb")
    engine.index([kb / "hr" / "cases"])  # ids relative to cases/; the list still comes from hr/.ragacl
    assert _visible(engine, STRANGER) == {"notices/notice.txt"}
    assert _visible(engine, ALICE) == {"case-7.txt", "notices/notice.txt"}
    engine.index([kb / "board" / "deck.txt"])  # a file named alone too
    assert "deck.txt" not in _visible(engine, ALICE) and "deck.txt" in _visible(engine, Access("bob"))


@pytest.mark.parametrize("content, says", [
    ('"private"', "must be \"public\" or an object"),
    ('["hr"]', "got list"),
    ('{"roles": ["hr"]}', "'roles'"),
    ('{"groups": "hr"}', '"groups" must be a list'),
    ('{"users": [""]}', '"users" must be a list of non-empty names'),
    ('{"users": ["a"], "users": ["b"]}', "'users' is given twice"),
    ("", "empty"),
    ("groups = ['hr']", "not valid JSON"),
])
def test_a_malformed_ragacl_is_refused_saying_what_is_wrong_and_what_to_write(tmp_path, content, says):
    path = _write(tmp_path / ACL_FILE, content)
    with pytest.raises(IngestError, match="holds \"public\" or") as raised:
        read_acl_file(path)
    assert says in raised.value.reason
    (tmp_path / "bytes" / ACL_FILE).parent.mkdir()
    (tmp_path / "bytes" / ACL_FILE).write_bytes(b'{"users": ["\xff"]}')
    with pytest.raises(IngestError, match="not UTF-8"):
        read_acl_file(tmp_path / "bytes" / ACL_FILE)
    assert read_acl_file(_write(tmp_path / "ok" / ACL_FILE, '{"groups": ["hr", "hr", "a"]}')) == \
        {"users": [], "groups": ["a", "hr"]}


def test_a_malformed_ragacl_fails_closed_and_keeps_what_was_indexed(engine, counting, tmp_path):
    kb = tmp_path / "kb"
    _acl(kb / "hr", {"groups": ["hr"]})
    _write(kb / "hr" / "salaries.txt", f"Salary bands and {PHRASE}.")
    _write(kb / "open.txt", f"Canteen menu and {PHRASE}.")
    assert engine.index([kb]).added == 2
    _write(kb / "hr" / ACL_FILE, '{"groups": "hr"}')  # broken: a name, not a list
    _write(kb / "hr" / "appeal.txt", f"A new appeal under {PHRASE}.")
    _write(kb / "hr" / "cases" / "case-9.txt", f"Case 9 under {PHRASE}.")  # governed by the broken file too
    _acl(kb / "hr" / "board", {"users": ["bob"]})  # nearer, and sound: not held back
    _write(kb / "hr" / "board" / "deck.txt", f"Deck under {PHRASE}.")
    report = engine.index([kb], sync=True)
    (problem,) = report.problems
    assert problem.path == str(kb / "hr" / ACL_FILE) and problem.kind == "failed"
    assert '"groups" must be a list' in problem.reason and "the 3 files it governs" in problem.reason
    assert "fix the file" in problem.reason and report.exit_code() == 1
    assert report.added == 1 and report.deleted == 0, "only the board's deck; --sync removed nothing held back"
    ids = {d.doc_id for d in engine.documents(limit=100).documents}
    assert ids == {"open.txt", "hr/salaries.txt", "hr/board/deck.txt"}, "new files under it are not indexed"
    assert _visible(engine, STRANGER) == {"open.txt"}, "what was indexed keeps its list: nothing opened"
    assert _visible(engine, ALICE) == {"open.txt", "hr/salaries.txt"}
    _acl(kb / "hr", {"groups": ["hr"]})  # fixed: the held-back files come in
    assert engine.index([kb], sync=True).added == 2
    assert _visible(engine, ALICE) == {"open.txt", "hr/salaries.txt", "hr/appeal.txt", "hr/cases/case-9.txt"}


def test_a_ragacl_at_the_root_of_a_new_index_that_is_malformed_indexes_nothing_under_it(engine, tmp_path):
    kb = tmp_path / "kb"
    _write(kb / ACL_FILE, '{"groups": ["hr"]')
    _write(kb / "a.txt", f"Notes on {PHRASE}.")
    report = engine.index([kb])
    assert report.documents == 0 and report.failed == 1 and "not valid JSON" in report.problems[0].reason
    assert engine.index([kb / ACL_FILE]).problems[0].reason.startswith("an access list file (.ragacl) is never indexed")


def test_an_edited_ragacl_changes_access_for_the_next_search_with_nothing_embedded(engine, counting, tmp_path):
    kb = tmp_path / "kb"
    _acl(kb / "hr", {"groups": ["hr"]})
    _write(kb / "hr" / "salaries.txt", f"Salary bands and {PHRASE}.")
    _write(kb / "hr" / "cases" / "case-7.txt", f"Case 7 under {PHRASE}.")
    _write(kb / "open.txt", f"Canteen menu and {PHRASE}.")
    engine.index([kb])
    assert _visible(engine, ALICE) == {"open.txt", "hr/salaries.txt", "hr/cases/case-7.txt"}
    passages, vectors, chunks = counting.passages, _vectors(engine), engine.info().manifest["counts"]["chunks"]

    _acl(kb / "hr", {"groups": ["board"]})  # the documents' bytes are the same: only the list changed
    report = engine.index([kb], sync=True)
    assert (report.acl_changed, report.unchanged, report.documents, report.chunks) == (2, 3, 0, 0)
    assert report.as_dict()["acl_changed"] == 2 and report.exit_code() == 0
    assert counting.passages == passages, "nothing chunked or embedded again"
    assert _vectors(engine) == vectors and engine.info().manifest["counts"]["chunks"] == chunks
    assert _visible(engine, ALICE) == {"open.txt"}
    assert _visible(engine, Access("dan", ("board",))) == {"open.txt", "hr/salaries.txt", "hr/cases/case-7.txt"}

    (kb / "hr" / ACL_FILE).unlink()  # no list: the collection's default (public) decides
    assert engine.index([kb]).acl_changed == 2 and counting.passages == passages
    assert _visible(engine, STRANGER) == {"open.txt", "hr/salaries.txt", "hr/cases/case-7.txt"}
    again = engine.index([kb])
    assert (again.acl_changed, again.unchanged) == (0, 3) and counting.passages == passages


def test_a_records_acl_alone_changing_is_an_update_without_embedding(engine, counting):
    def records(acl):
        return [json.dumps(r).encode() + b"\n" for r in [
            {"id": "review", "text": f"Carol's review under {PHRASE}.", "acl": acl},
            {"id": "menu", "text": f"Canteen menu and {PHRASE}.", "acl": "public"}]]

    assert engine.index_jsonl(records({"groups": ["hr"]}), "people.jsonl").added == 2
    passages, vectors = counting.passages, _vectors(engine)
    assert _visible(engine, ALICE) == {"review", "menu"} and _visible(engine, STRANGER) == {"menu"}
    report = engine.index_jsonl(records({"users": ["carol"]}), "people.jsonl", sync=True)
    assert (report.acl_changed, report.unchanged, report.documents, report.deleted) == (1, 2, 0, 0)
    assert counting.passages == passages and _vectors(engine) == vectors
    assert _visible(engine, ALICE) == {"menu"} and _visible(engine, Access("carol")) == {"review", "menu"}
    changed = [json.dumps({"id": "review", "text": f"Carol's new review under {PHRASE}.", "acl": "public"}).encode()
               + b"\n"]
    assert engine.index_jsonl(changed, "people.jsonl").updated == 1, "new text is content: embedded again"
    assert counting.passages > passages


def _mail(path: Path) -> Path:
    message = EmailMessage()
    message["Subject"] = "Offer letter"
    message["From"] = "hr@acme.example"
    message["To"] = "ana@acme.example"
    message.set_content(f"Please find the offer attached; it follows {PHRASE}.")
    message.add_attachment(f"Offer: salary band C, under {PHRASE}.".encode(), maintype="text", subtype="plain",
                           filename="offer.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(message.as_bytes())
    return path


def test_an_emails_attachments_inherit_their_files_list(engine, counting, tmp_path):
    kb = tmp_path / "kb"
    _acl(kb / "hr", {"groups": ["hr"]})
    _mail(kb / "hr" / "offer.eml")
    assert engine.index([kb]).added == 2
    stored = {d.doc_id: d.metadata for d in engine.documents(limit=10).documents}
    assert stored["hr/offer.eml/offer.txt"]["parent"] == "hr/offer.eml"
    assert {m["acl"]["groups"][0] for m in stored.values()} == {"hr"}
    assert _visible(engine, ALICE) == {"hr/offer.eml", "hr/offer.eml/offer.txt"}
    assert _visible(engine, STRANGER) == set()
    passages = counting.passages
    _acl(kb / "hr", "public")
    assert engine.index([kb]).acl_changed == 2 and counting.passages == passages
    assert _visible(engine, STRANGER) == {"hr/offer.eml", "hr/offer.eml/offer.txt"}
