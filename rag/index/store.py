"""The storage engine's front: one index folder of immutable versions made of immutable segments,
a CURRENT pointer swapped atomically, and one writer.

A write costs what it changes: it adds one small segment, and tombstones there what it deletes or
replaces in older ones (rag.index.writer); its version becomes live all at once or not at all
(rag.index.commit). Readers search every segment of a version and merge the results, with BM25
statistics of the whole version (rag.index.reader). Versions written before segments (format 2
and older) are read as they are and rewritten as one segment by the next write (rag.index.legacy).

    IndexStore(path, settings)      the folder (rag.index.folder), and:
      .open_reader()                the live version, searched
      .open_writer(embedding, ...)  the next version, written
      .check(), .describe()         `rag check` and `rag info` (rag.index.inspection)
"""

from __future__ import annotations

from typing import Any

from rag.errors import IndexCorruptError
from rag.index import inspection
from rag.index.chunkstore import ChunkStore
from rag.index.folder import IndexFolder
from rag.index.reader import IndexReader
from rag.index.segments import Reembed
from rag.index.writer import IndexWriter
from rag.records import CheckReport, IndexInfo


class IndexStore(IndexFolder):
    """One index folder, opened for reading, writing and inspection."""

    def open_reader(self) -> IndexReader:
        for _ in range(5):
            name = inspection.live_version(self)
            try:
                return IndexReader(self.path / name, self.settings, self.use_gpu(), self)
            except IndexCorruptError:
                # A writer may have retired this version between our read of CURRENT and the open.
                if self.current_version() == name:
                    raise
        raise IndexCorruptError(f"{self.path}: CURRENT keeps changing while opening; try again")

    def open_writer(self, embedding: dict[str, Any], chunking: dict[str, Any],
                    reembed: Reembed | None = None) -> IndexWriter:
        """With `reembed`, a writer whose commit makes every vector again for `embedding`'s model
        (rag.indexing.reembed), keeping the rows, texts and BM25 as they are."""
        return IndexWriter(self, embedding, chunking, reembed)

    def open_rows(self, name: str) -> ChunkStore:
        """A version's documents and chunks alone, read-only (no vectors loaded)."""
        return inspection.open_rows(self, name)

    def live_version(self) -> str:
        """The live version's name; IndexNotFoundError, saying how to build one, when there is none."""
        return inspection.live_version(self)

    def check(self) -> CheckReport:
        return inspection.check(self)

    def describe(self) -> IndexInfo:
        return inspection.describe(self)
