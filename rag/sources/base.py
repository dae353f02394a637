"""What every source offers: a listing of items with stable ids and version tags, and one item's
bytes. Adding a source is one module with these two calls (and `who_may_read` when it knows)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from rag.errors import RagError
from rag.records import Acl


class SourceError(RagError):
    """A source cannot be listed or read now (unreachable, credentials refused, a listing cut
    short): the run deletes nothing and says what happened."""


@dataclass(frozen=True)
class Item:
    """One document file of a source. `id` is its path inside the source (posix, no leading
    slash): the document's id. `version` changes whenever its bytes do (an ETag, a commit, an
    mtime with the size), so an unchanged item is never fetched again."""

    id: str
    version: str
    size: int = 0
    acl: Acl | None = None  # who may read it, where the source knows


class Source(Protocol):
    name: str

    def items(self) -> Iterator[Item]:
        """Every item the source holds now; SourceError when the listing cannot be complete."""
        ...

    def fetch(self, item: Item) -> bytes:
        """The item's bytes; SourceError when it cannot be read."""
        ...

    def close(self) -> None:
        ...
