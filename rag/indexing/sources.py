"""What an indexing run reads: events from its sources, in source order, and who prepares them.

A source yields, in order, `Loaded` documents (read here, or `Prepared` elsewhere: chunked and
embedded by a Ray worker), `Failed` reads (a file or a record that could not be read, with why)
and `Read` byte counts no document accounts for (a file's headers, failed records), which only
move the progress bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.config import Settings
from rag.errors import RagError
from rag.ingest.discover import SourceFile
from rag.ingest.loaders import FileReader
from rag.records import Acl, Chunk, Document

# The origin of records streamed in with --jsonl (a file's documents have its real path).
STREAM_ORIGIN = "stream"


@dataclass
class Prepared:
    """A document another process (a Ray worker) already chunked and embedded.

    The writer decides about it exactly as about a document it loaded itself (new, changed,
    unchanged, a duplicate, the content of another) and writes these chunks and vectors where
    it would have made its own. `chunks` is None where the worker saw the document's content
    already indexed under its id, and so skipped the work a writer never asks for then.
    """

    document: Document
    chunks: list[Chunk] | None
    vectors: np.ndarray | None
    # Each chunk's BM25 tokens as the index stores them (`serialize_tokens`), made with the
    # index's tokenizer settings: the writer's own share of the work, moved to the workers.
    tokens: list[str] | None = None
    # Instead of `vectors`: the chunks' vectors encoded for the index's trained IVF index (its
    # list and code, VectorIndex.encode), the rest of the writer's work moved to the workers.
    codes: np.ndarray | None = None


@dataclass(frozen=True)
class Loaded:
    where: str
    document: Document
    prepared: Prepared | None = None


@dataclass(frozen=True)
class Failed:
    where: str
    error: RagError


@dataclass(frozen=True)
class Read:
    nbytes: int


Event = Loaded | Failed | Read


@dataclass(frozen=True)
class IndexState:
    """What a preparer needs of the index and the run, taken under the run's write lock when it
    starts: the (id, sha256) of each document the collection holds (to skip what is unchanged),
    streamed, and the trained IVF index new vectors are encoded for, if an earlier write made one.
    In this process also `holds(id, sha256)`, the same question asked of the index one document
    at a time (a file it holds unchanged is not parsed, nor read by OCR, again), and the
    receiver of OCR's progress. Neither asks about access lists: a file's list is given to its
    documents after loading (`with_folder_acl`), so the run's decision sees a list that alone
    changed, in a file read unchanged too."""

    stored_content: Iterable[tuple[str, str]]
    trained_template: Path | None
    holds: Callable[[str, str], bool] | None = None
    on_ocr_page: Callable[[float], None] | None = None


class Preparer(Protocol):
    """Turns sources into documents, in order: loaded here, or prepared elsewhere (Ray)."""

    def start(self, state: IndexState) -> None:
        """The run has the index's write lock: here is what the index holds."""
        ...

    def files(self, files: list[SourceFile]) -> Iterator[Iterable[Document | Prepared | RagError]]:
        """One iterable per file, in the order given, of what loading it gave."""
        ...

    def documents(self, items: Iterable[Document | RagError]) -> Iterator[Document | Prepared | RagError]:
        """Records already read (JSON Lines): each document, or prepared, in the order given."""
        ...


# Makes a run's preparer from its settings and the origin its files' documents get (None: their path).
PreparerFactory = Callable[[Settings, "str | None"], Preparer]


def loaded_documents(src: SourceFile, reader: FileReader, origin: str | None) -> Iterator[Document | RagError]:
    """A file's documents; those of a temporary upload (`origin` given) named as it was sent."""
    for item in reader.read(src):
        if origin is not None and isinstance(item, Document):
            item.origin = origin
            item.metadata["source"] = src.rel  # an attachment's too: the upload's name
        yield item


class LocalPreparer:
    """Loads files in this process, one at a time as the writer asks (memory stays bounded)."""

    def __init__(self, settings: Settings, origin: str | None) -> None:
        self.settings = settings.ingest
        self.origin = origin
        self.reader = FileReader(self.settings)

    def start(self, state: IndexState) -> None:
        # The writer decides about every document it loads; the reader only skips parsing (and
        # OCR) for a file the index holds exactly as it is.
        self.reader = FileReader(self.settings, on_ocr_page=state.on_ocr_page, holds=state.holds)

    def files(self, files: list[SourceFile]) -> Iterator[Iterable[Document | Prepared | RagError]]:
        try:
            for src in files:
                yield loaded_documents(src, self.reader, self.origin)
        finally:
            self.reader.close()

    def documents(self, items: Iterable[Document | RagError]) -> Iterator[Document | Prepared | RagError]:
        yield from items


def with_folder_acl(item: Document | Prepared | RagError, acl: Acl | None) -> Document | Prepared | RagError:
    """The item, its document given its file's access list (its folders' `.ragacl`, or None).

    Given here, after loading, so that a file read unchanged (not parsed again, or skipped by a
    Ray worker) carries the list as well, and the decision sees when the list alone changed. A
    record's own list is nearer and stays; any other document's list is its folder's only."""
    document = item.document if isinstance(item, Prepared) else item
    if not isinstance(document, Document) or (document.metadata.get("format") == "record"
                                              and "acl" in document.metadata):
        return item
    if acl is None:
        document.metadata.pop("acl", None)
    else:
        document.metadata["acl"] = acl
    return item


def event(where: str, item: Document | Prepared | RagError) -> Event:
    if isinstance(item, RagError):
        return Failed(where, item)
    if isinstance(item, Prepared):
        return Loaded(item.document.where or where, item.document, item)
    return Loaded(item.where or where, item)


def with_upload_acl(item: Document | Prepared | RagError, acl: Acl | None) -> Document | Prepared | RagError:
    """The item, its document given the upload's list when the request gave one (then over a
    record's own: an uploader shares only as the request allowed)."""
    document = item.document if isinstance(item, Prepared) else item
    if acl is not None and isinstance(document, Document):
        document.metadata["acl"] = acl
    return item
