"""A write's changes to rows: new ones into its segment, and tombstones against older segments'.

A change to an older segment's row is a tombstone in the new segment plus, for a changed row,
its new version there; rows the new segment holds itself are changed in place.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import numpy as np

from rag.index.chunkstore import ChunkStore
from rag.index.schema import CHUNK_COLUMNS, DOCUMENT_COLUMNS
from rag.records import Document


class SegmentEdits:
    """The row changes of one write, over a store opened with its new segment (views.open_segments)."""

    def __init__(self, store: ChunkStore) -> None:
        if store.views is None or store.views.new_segment is None:
            raise ValueError("edits need a store opened with a new segment")
        self.store = store
        self.conn = store.conn
        self.new_segment: str = store.views.new_segment
        # (old id, new id) of chunks copied into the new segment when their document was deleted
        # and another id sharing its content took them over; the writer copies their vectors.
        self.moved_chunks: list[tuple[int, int]] = []

    def continue_ids(self, next_id: int) -> None:
        """New chunk ids start at `next_id`: ids are never reused, across segments too."""
        self.conn.execute("DELETE FROM main.sqlite_sequence WHERE name = 'chunks'")
        self.conn.execute("INSERT INTO main.sqlite_sequence (name, seq) VALUES ('chunks', ?)", (next_id - 1,))

    def next_id(self) -> int:
        row = self.conn.execute("SELECT seq FROM main.sqlite_sequence WHERE name = 'chunks'").fetchone()
        return int(row[0]) + 1 if row else 1

    def _tombstone_document(self, segment: str, collection: str, doc_id: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO main.deleted_documents (segment, collection, doc_id) VALUES (?, ?, ?)",
                          (segment, collection, doc_id))
        self.conn.execute("INSERT OR IGNORE INTO gone_documents (segment, collection, doc_id) VALUES (?, ?, ?)",
                          (segment, collection, doc_id))

    def _tombstone_chunks(self, ids: list[int]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO main.deleted_chunks (id) VALUES (?)", ((i,) for i in ids))
        self.conn.executemany("INSERT OR IGNORE INTO gone_chunks (id) VALUES (?)", ((i,) for i in ids))

    def _rewrite_documents(self, where: str, params: tuple[Any, ...], changes: dict[str, Any]) -> None:
        """Change the documents matching `where`: in place in the new segment, and as a new row
        there (the old one tombstoned) where an older segment holds them."""
        assignments = ", ".join(f"{column} = ?" for column in changes)
        self.conn.execute(f"UPDATE main.documents SET {assignments} WHERE {where}", (*changes.values(), *params))
        rows = self.conn.execute(f"SELECT segment, {DOCUMENT_COLUMNS} FROM documents WHERE {where} AND segment != ?",
                                 (*params, self.new_segment)).fetchall()
        columns = DOCUMENT_COLUMNS.split(", ")
        for segment, *values in rows:
            row = dict(zip(columns, values)) | changes
            self._tombstone_document(segment, row["collection"], row["doc_id"])
            self.conn.execute(f"INSERT INTO main.documents ({DOCUMENT_COLUMNS}) VALUES ({', '.join('?' * len(columns))})",
                              [row[c] for c in columns])

    def relocate(self, collection: str, document: Document) -> None:
        self._rewrite_documents("collection = ? AND doc_id = ?", (collection, document.doc_id), _place(document))

    def set_access(self, collection: str, document: Document) -> None:
        """The document's access list (and place) as read now; its other metadata, chunks and
        vectors as they are (a document read unchanged is not parsed, so carries none of them)."""
        key = (collection, document.doc_id)
        row = self.conn.execute("SELECT metadata FROM documents WHERE collection = ? AND doc_id = ?", key).fetchone()
        if row is None:
            raise ValueError(f"no document {document.doc_id!r} in collection {collection!r}")
        metadata = json.loads(row[0])
        metadata.pop("acl", None)
        if document.metadata.get("acl") is not None:
            metadata["acl"] = document.metadata["acl"]
        self._rewrite_documents("collection = ? AND doc_id = ?", key,
                                {**_place(document), "metadata": json.dumps(metadata, ensure_ascii=False)})

    def delete_document(self, collection: str, doc_id: str) -> list[int]:
        """Remove a document. Returns the ids of its chunks in the new segment, whose vectors the
        writer drops; its chunks in older segments are tombstoned. When other ids share its
        content, the chunks pass to the first of them instead (`moved_chunks` then says which
        older chunks were copied into the new segment, under which new ids)."""
        key = (collection, doc_id)
        row = self.conn.execute("SELECT segment FROM documents WHERE collection = ? AND doc_id = ?", key).fetchone()
        if row is None:
            return []
        # Sorted here: with ORDER BY, SQLite walks every document of the collection in key order.
        aliases = sorted(r[0] for r in self.conn.execute(
            "SELECT doc_id FROM documents WHERE collection = ? AND content_of = ?", key))
        if row[0] == self.new_segment:
            self.conn.execute("DELETE FROM main.documents WHERE collection = ? AND doc_id = ?", key)
        else:
            self._tombstone_document(row[0], collection, doc_id)
        if aliases:
            heir = aliases[0]
            self._rewrite_documents("collection = ? AND doc_id = ?", (collection, heir), {"content_of": None})
            self._rewrite_documents("collection = ? AND content_of = ?", key, {"content_of": heir})
            self.conn.execute("UPDATE main.chunks SET doc_id = ? WHERE collection = ? AND doc_id = ?", (heir, *key))
            older = self.conn.execute(f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE collection = ? AND doc_id = ? "
                                      "AND segment != ? ORDER BY id", (*key, self.new_segment)).fetchall()
            self._tombstone_chunks([r[0] for r in older])
            for old_id, coll, _, ordinal, text, metadata, tokens in older:
                cur = self.conn.execute("INSERT INTO main.chunks (collection, doc_id, ordinal, text, metadata, tokens) "
                                        "VALUES (?, ?, ?, ?, ?, ?)", (coll, heir, ordinal, text, metadata, tokens))
                self.moved_chunks.append((int(old_id), int(cur.lastrowid)))
            return []
        ids = [r[0] for r in self.conn.execute("SELECT id FROM main.chunks WHERE collection = ? AND doc_id = ?", key)]
        self.conn.execute("DELETE FROM main.chunks WHERE collection = ? AND doc_id = ?", key)
        self._tombstone_chunks([r[0] for r in self.conn.execute(
            "SELECT id FROM chunks WHERE collection = ? AND doc_id = ? AND segment != ?", (*key, self.new_segment))])
        return ids

    def written(self) -> dict[str, int]:
        """What the new segment adds and tombstones: rows of each kind, for the version's counts
        without counting every segment's rows again."""
        return {f"{what}.{table}": int(self.conn.execute(f"SELECT COUNT(*) FROM main.{prefix}{table}").fetchone()[0])
                for what, prefix in (("added", ""), ("deleted", "deleted_")) for table in ("documents", "chunks")} | {
            "masked": int(self.conn.execute("SELECT COUNT(*) FROM main.masked").fetchone()[0])}

    def new_rows(self) -> tuple[np.ndarray, Iterator[str]]:
        """The new segment's chunk ids, ascending, and their stored BM25 tokens in that order."""
        ids = np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM main.chunks ORDER BY id")), dtype=np.int64)
        return ids, (r[0] for r in self.conn.execute("SELECT tokens FROM main.chunks ORDER BY id"))


def _place(document: Document) -> dict[str, Any]:
    """The columns saying where a document was read: rewritten when it moves."""
    return {"source": document.metadata.get("source", ""), "origin": document.origin or None,
            "mtime": document.metadata.get("mtime")}
