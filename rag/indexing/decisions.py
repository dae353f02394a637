"""What a run does with each document it reads: one decision, made from what the run and the
index already hold, before anything is chunked or embedded.

The order matters and is the same for every source: an id read twice in one run is a duplicate;
a document of another source's id is a conflict (unless the run may replace it); unchanged
content is left alone (and only its place recorded, when it moved), or, when its access list
changed, only its rows rewritten (`acl_changed`: who may read a document is not what it says, so
nothing is chunked or embedded again); content the run or the index already holds under another id
is stored once, this id an alias of that one; the rest is new, or changed (an earlier version
replaced).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from rag.index.rows import StoredDocument
from rag.records import Document

Kind = Literal["new", "changed", "unchanged", "relocated", "acl_changed", "alias", "duplicate", "conflict"]


@dataclass(frozen=True)
class Decision:
    kind: Kind
    # alias: the id holding the content, and whether it is in a batch not yet written.
    holder: str | None = None
    pending: bool = False
    # Whether an earlier version of the document is replaced (changed, or an alias of a stored id).
    existed: bool = False
    # duplicate and conflict: what to tell the user.
    reason: str = ""


class Holdings(Protocol):
    """What the run and the index hold, asked only as far as a decision needs it."""

    def stored(self, doc_id: str) -> StoredDocument | None:
        """The collection's document of this id, as the index holds it."""
        ...

    def batch_holder(self, sha256: str) -> str | None:
        """The id holding this content in a batch the run has not written yet."""
        ...

    def index_holder(self, sha256: str) -> str | None:
        """The id holding this content in the index."""
        ...


def decide(document: Document, where: str, first_read: str | None, holdings: Holdings, collection: str,
           replace: bool) -> Decision:
    """The decision about `document`, read at `where`; `first_read` is where this run read its
    id before (None the first time)."""
    doc_id = document.doc_id
    if first_read is not None:
        return Decision("duplicate", reason=(
            f"duplicate document id {doc_id!r} (already read from {first_read}); ids must be unique within a "
            "collection: index one of the two into another collection (--collection NAME)"))
    stored = holdings.stored(doc_id)
    if stored is not None and not replace and stored.origin is not None and stored.origin != document.origin:
        return Decision("conflict", reason=(
            f"document id {doc_id!r} of collection {collection!r} is already indexed from {stored.source}; "
            f"{where} would replace it. To keep both, index this source into its own collection (--collection "
            "NAME); to replace the indexed one, run again with --replace"))
    sha = document.metadata["sha256"]
    if stored is not None and stored.sha256 == sha:
        if stored.acl != document.metadata.get("acl"):
            return Decision("acl_changed")  # its place is recorded too, when it also moved
        return Decision("relocated" if stored.origin != (document.origin or None) else "unchanged")
    existed = stored is not None
    holder = holdings.batch_holder(sha)
    if holder is not None:
        return Decision("alias", holder, pending=True, existed=existed)
    holder = holdings.index_holder(sha)
    if holder is not None and holder != doc_id:
        return Decision("alias", holder, existed=existed)
    return Decision("changed" if existed else "new", existed=existed)
