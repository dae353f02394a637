"""What a run does with each document it reads (rag.indexing.decisions.decide), driven without a
model or an index: every kind of decision, and the order in which they take precedence."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rag.index.rows import StoredDocument
from rag.indexing.decisions import decide
from rag.records import Document


def _document(doc_id: str = "a.md", sha: str = "s1", origin: str = "/docs/a.md") -> Document:
    return Document(doc_id, [], {"sha256": sha, "source": origin}, origin=origin)


def _stored(doc_id: str = "a.md", sha: str = "s1", origin: str | None = "/docs/a.md") -> StoredDocument:
    return StoredDocument("default", doc_id, origin or "a.md", origin, sha, "markdown")


@dataclass
class Holdings:
    """What the run and the index hold, as plain data; `asked` records what decide looked up."""

    documents: dict[str, StoredDocument] = field(default_factory=dict)
    in_batches: dict[str, str] = field(default_factory=dict)  # sha256 -> holder
    in_index: dict[str, str] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def stored(self, doc_id: str) -> StoredDocument | None:
        self.asked.append("stored")
        return self.documents.get(doc_id)

    def batch_holder(self, sha256: str) -> str | None:
        self.asked.append("batch")
        return self.in_batches.get(sha256)

    def index_holder(self, sha256: str) -> str | None:
        self.asked.append("index")
        return self.in_index.get(sha256)


def _decide(document: Document, holdings: Holdings, first_read: str | None = None, replace: bool = False):
    return decide(document, "/docs/a.md", first_read, holdings, "default", replace)


def test_a_document_the_index_lacks_is_new_and_one_it_holds_with_other_content_changed():
    assert _decide(_document(), Holdings()).kind == "new"
    changed = _decide(_document(sha="s2"), Holdings({"a.md": _stored()}))
    assert (changed.kind, changed.existed) == ("changed", True)


def test_unchanged_content_is_left_alone_and_only_its_place_recorded_when_it_moved():
    assert _decide(_document(), Holdings({"a.md": _stored()})).kind == "unchanged"
    moved = _document(origin="/elsewhere/a.md")
    assert _decide(moved, Holdings({"a.md": _stored(origin=None)})).kind == "relocated", \
        "a document indexed before origins were kept takes its new place"
    assert _decide(moved, Holdings({"a.md": _stored()}), replace=True).kind == "relocated"


def test_an_id_read_twice_in_one_run_is_a_duplicate_before_anything_is_looked_up():
    holdings = Holdings({"a.md": _stored()})
    decision = _decide(_document(), holdings, first_read="/docs/A.md")
    assert decision.kind == "duplicate" and "already read from /docs/A.md" in decision.reason
    assert holdings.asked == []


def test_another_sources_document_of_the_same_id_is_a_conflict_unless_the_run_may_replace_it():
    elsewhere = Holdings({"a.md": _stored(origin="/other/a.md", sha="s0")})
    conflict = _decide(_document(), elsewhere)
    assert conflict.kind == "conflict" and "already indexed from /other/a.md" in conflict.reason
    assert "--replace" in conflict.reason and "--collection" in conflict.reason
    assert _decide(_document(), elsewhere, replace=True).kind == "changed"


@pytest.mark.parametrize("existing", [None, _stored(sha="s0")])
def test_content_held_under_another_id_makes_an_alias_pending_batches_first(existing):
    documents = {"a.md": existing} if existing else {}
    pending = _decide(_document(), Holdings(documents, in_batches={"s1": "b.md"}, in_index={"s1": "c.md"}))
    assert (pending.kind, pending.holder, pending.pending, pending.existed) == ("alias", "b.md", True, bool(existing))
    stored = _decide(_document(), Holdings(documents, in_index={"s1": "c.md"}))
    assert (stored.kind, stored.holder, stored.pending) == ("alias", "c.md", False)


def test_a_document_is_never_an_alias_of_itself():
    assert _decide(_document(sha="s2"), Holdings({"a.md": _stored()}, in_index={"s2": "a.md"})).kind == "changed"


def test_unchanged_content_whose_access_list_changed_is_an_acl_change_moved_or_not():
    listed = _document()
    listed.metadata["acl"] = {"users": [], "groups": ["hr"]}
    assert _decide(listed, Holdings({"a.md": _stored()})).kind == "acl_changed"
    stored = StoredDocument("default", "a.md", "/docs/a.md", "/docs/a.md", "s1", "markdown", acl="public")
    assert _decide(_document(), Holdings({"a.md": stored})).kind == "acl_changed", "a list removed is a change"
    assert _decide(_document(origin="/elsewhere/a.md"), Holdings({"a.md": stored}), replace=True).kind == "acl_changed"
    same = StoredDocument("default", "a.md", "/docs/a.md", "/docs/a.md", "s1", "markdown",
                          acl={"users": [], "groups": ["hr"]})
    assert _decide(listed, Holdings({"a.md": same})).kind == "unchanged"
    assert _decide(_document(sha="s2"), Holdings({"a.md": stored})).kind == "changed", "new content wins"
