"""The rows of an index: documents and chunks, looked up, written, and fetched for hits.

`Rows` works on any connection whose `documents`, `chunks` and `masked` are tables (a segment
being written, a format-2 version) or views over a version's segments (rag.index.views): only
where writes go (`writes`, the new segment's own tables) and where documents sharing another's
content are looked up (`aliases`) differ.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.filters import Filter, to_sql
from rag.index.access_map import AccessMap
from rag.index.manifest import utc_now
from rag.index.schema import DOCUMENT_COLUMNS
from rag.records import Chunk, Document


@dataclass(frozen=True)
class StoredDocument:
    """What the index holds about one document, for deciding whether a new read may replace it."""

    collection: str
    doc_id: str
    source: str
    origin: str | None
    sha256: str
    format: str | None
    # Its access list as stored ("public", {"users", "groups"}), None where it has none.
    acl: Any = None


# A document's access list as JSON text (None where it has none), for StoredDocument.
_ACL = ("CASE json_type(metadata, '$.acl') WHEN 'text' THEN json_quote(json_extract(metadata, '$.acl')) "
        "ELSE json_extract(metadata, '$.acl') END")


def _stored(row: tuple[Any, ...]) -> StoredDocument:
    *columns, acl = row
    return StoredDocument(*columns, acl=json.loads(acl) if acl is not None else None)


@dataclass(frozen=True)
class ShownChunk:
    """A chunk as a hit shows it: its text, and the document it is shown as with that one's fields."""

    collection: str
    doc_id: str
    ordinal: int
    text: str
    metadata: dict[str, Any]
    source: str
    title: str | None


# Each chunk with every document it is shown as: its own, and those sharing its content. Two arms,
# not one join on `d.doc_id = c.doc_id OR d.content_of = c.doc_id`: SQLite cannot use a key for an
# OR, and without statistics it joined every chunk to every document of its collection (a filter
# took 38 s at 10,000 chunks). UNION also drops repeats, as DISTINCT did.
_SHOWN_AS = ("SELECT {columns} FROM chunks c JOIN documents d ON d.collection = c.collection AND d.doc_id = c.doc_id "
             "WHERE {where} UNION "
             "SELECT {columns} FROM documents d JOIN chunks c ON c.collection = d.collection AND c.doc_id = d.content_of "
             "WHERE d.content_of IS NOT NULL AND {where}")


class Rows:
    def __init__(self, conn: sqlite3.Connection, writes: str = "", aliases: str | None = "documents") -> None:
        self.conn = conn
        # Where rows are written: the connection's own tables (for a new segment, "main.", not
        # the views of the same names).
        self.writes = writes
        # Where documents sharing another's content are looked up; None where there are none.
        self.aliases = aliases
        self._access: AccessMap | None = None
        self._access_lock = threading.Lock()

    def document(self, collection: str, doc_id: str) -> StoredDocument | None:
        row = self.conn.execute(f"SELECT collection, doc_id, source, origin, sha256, format, {_ACL} FROM documents "
                                "WHERE collection = ? AND doc_id = ?", (collection, doc_id)).fetchone()
        return _stored(row) if row else None

    def collections_of(self, doc_id: str) -> list[str]:
        """The collections that hold a document with this id."""
        return sorted(r[0] for r in self.conn.execute("SELECT collection FROM documents WHERE doc_id = ?", (doc_id,)))

    def document_with_content(self, collection: str, sha256: str) -> str | None:
        """The document of the collection that holds the chunks of this content, if any."""
        row = self.conn.execute("SELECT doc_id FROM documents WHERE collection = ? AND sha256 = ? "
                                "AND content_of IS NULL LIMIT 1", (collection, sha256)).fetchone()
        return row[0] if row else None

    def documents_in(self, collection: str) -> Iterator[StoredDocument]:
        """Every document of a collection, streamed in id order."""
        rows = self.conn.execute(f"SELECT collection, doc_id, source, origin, sha256, format, {_ACL} FROM documents "
                                 "WHERE collection = ? ORDER BY doc_id", (collection,))
        for row in rows:
            yield _stored(row)

    def put_document(self, document: Document, collection: str, content_of: str | None = None) -> None:
        meta = document.metadata
        extra = {k: v for k, v in meta.items() if k not in ("source", "title", "mtime", "sha256", "format")}
        self.conn.execute(
            f"INSERT OR REPLACE INTO {self.writes}documents ({DOCUMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (collection, document.doc_id, meta.get("source", ""), document.origin or None, meta.get("title"),
             meta.get("mtime"), meta["sha256"], meta.get("format"), json.dumps(extra, ensure_ascii=False),
             utc_now(), content_of),
        )

    def mask(self, ids: Iterable[int]) -> None:
        self.conn.executemany(f"INSERT OR IGNORE INTO {self.writes}masked (id) VALUES (?)", ((int(i),) for i in ids))

    def matching_chunk_ids(self, filters: list[Filter]) -> np.ndarray:
        """Chunk ids whose document (or a document sharing its content) and chunk match every filter."""
        where, params = to_sql(filters)
        rows = self.conn.execute(_SHOWN_AS.format(columns="c.id", where=where), params + params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def access_map(self) -> AccessMap:
        """Who may read which chunks, read once: a reader's rows never change (a write makes a new
        version, read through new Rows)."""
        with self._access_lock:
            if self._access is None:
                columns = "d.collection, json_type(d.metadata, '$.acl') AS kind, json_extract(d.metadata, '$.acl') AS acl, c.id"
                shown = _SHOWN_AS.format(columns=columns, where="1")
                self._access = AccessMap(self.conn.execute(
                    f"SELECT collection, kind, acl, group_concat(id) FROM ({shown}) GROUP BY collection, kind, acl"))
            return self._access

    def add_chunks(self, chunks: Iterable[Chunk], tokens: Iterable[str | None], collection: str) -> list[int]:
        ids = []
        for chunk, chunk_tokens in zip(chunks, tokens):
            cur = self.conn.execute(
                f"INSERT INTO {self.writes}chunks (collection, doc_id, ordinal, text, metadata, tokens) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (collection, chunk.doc_id, chunk.ordinal, chunk.text, json.dumps(chunk.metadata, ensure_ascii=False),
                 chunk_tokens),
            )
            ids.append(int(cur.lastrowid))
        return ids

    def fill_tokens(self, tokenize: Callable[[str], str], every: bool = False) -> None:
        """Store BM25 tokens for the chunks that have none (or, with `every`, for all)."""
        where = "" if every else " WHERE tokens IS NULL"
        rows = self.conn.execute(f"SELECT id, text FROM {self.writes}chunks{where}").fetchall()
        self.conn.executemany(f"UPDATE {self.writes}chunks SET tokens = ? WHERE id = ?",
                              ((tokenize(t), i) for i, t in rows))

    def get_chunks(self, ids: Iterable[int], filters: list[Filter] | None = None) -> dict[int, ShownChunk]:
        """Each chunk with the document it is shown as. Content stored once for several ids is
        shown as the first of them the filters allow (the one holding it when allowed), and
        `metadata.also_in` names the other allowed ones: a caller limited by filters never learns
        the name, source or title of a document outside them through a copy it may read."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        # Two lookups, not a join: over a version's segments both tables are views, and SQLite
        # joins two compound views far more slowly than it looks rows up in each.
        rows = []
        for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            batch = ids[start:start + 900]
            rows.extend(self.conn.execute(
                f"SELECT id, collection, doc_id, ordinal, text, metadata FROM chunks WHERE id IN ({','.join('?' * len(batch))})",
                batch))
        aliases = self._aliases_of({(collection, doc_id) for _, collection, doc_id, *_ in rows})
        named: dict[int, list[str]] = {}
        for cid, collection, doc_id, *_ in rows:
            names = [doc_id, *aliases.get((collection, doc_id), [])]
            named[cid] = self._allowed(cid, collection, names, filters) if filters and len(names) > 1 else names
        documents = self._document_fields({(collection, named[cid][0]) for cid, collection, *_ in rows if named[cid]})
        out: dict[int, ShownChunk] = {}
        for cid, collection, _, ordinal, text, metadata in rows:
            shown = named[cid]
            if not shown or (collection, shown[0]) not in documents:
                continue  # a chunk of no document: `rag check` reports it
            source, title, doc_metadata = documents[(collection, shown[0])]
            # A record's own fields (department, date, ...) travel with each of its chunks.
            document = json.loads(doc_metadata)
            fields = {**{k: v for k, v in document.items() if k != "fields"}, **document.get("fields", {})}
            chunk = json.loads(metadata)
            # A chunk keeps the source and title of the document it was cut from; it is shown as
            # this one (an alias, or the same document moved), so it carries this one's.
            chunk.update({k: v for k, v in (("source", source), ("title", title)) if k in chunk})
            out[cid] = ShownChunk(collection, shown[0], ordinal, text, {**fields, **chunk, "collection": collection},
                                  source, title)
            if len(shown) > 1:
                out[cid].metadata["also_in"] = shown[1:]
        return out

    def _aliases_of(self, holders: set[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        """(collection, holder) -> the other ids sharing its content, sorted."""
        by_collection: dict[str, set[str]] = {}
        for collection, doc_id in holders:
            by_collection.setdefault(collection, set()).add(doc_id)
        aliases: dict[tuple[str, str], list[str]] = {}
        for collection, doc_ids in by_collection.items() if self.aliases else ():  # one query per collection
            marks = ",".join("?" * len(doc_ids))
            # No ORDER BY: SQLite would walk the primary key for its order instead of the index.
            for holder, alias in self.conn.execute(
                    f"SELECT content_of, doc_id FROM {self.aliases} WHERE collection = ? AND content_of IN ({marks})",
                    (collection, *sorted(doc_ids))):
                aliases.setdefault((collection, holder), []).append(alias)
        for also in aliases.values():
            also.sort()
        return aliases

    def _allowed(self, chunk_id: int, collection: str, names: list[str], filters: list[Filter]) -> list[str]:
        """Those of `names` (documents sharing the chunk) that match the filters with it, in order."""
        where, params = to_sql(filters)
        found = {r[0] for r in self.conn.execute(
            f"SELECT d.doc_id FROM chunks c, documents d WHERE c.id = ? AND d.collection = ? "
            f"AND d.doc_id IN ({','.join('?' * len(names))}) AND {where}", (chunk_id, collection, *names, *params))}
        return [name for name in names if name in found]

    def _document_fields(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[Any, ...]]:
        """(collection, doc_id) -> (source, title, metadata JSON)."""
        by_collection: dict[str, set[str]] = {}
        for collection, doc_id in keys:
            by_collection.setdefault(collection, set()).add(doc_id)
        documents: dict[tuple[str, str], tuple[Any, ...]] = {}
        for collection, doc_ids in by_collection.items():
            names = sorted(doc_ids)
            for start in range(0, len(names), 900):
                batch = names[start:start + 900]
                for doc_id, source, title, doc_metadata in self.conn.execute(
                        f"SELECT doc_id, source, title, metadata FROM documents WHERE collection = ? "
                        f"AND doc_id IN ({','.join('?' * len(batch))})", (collection, *batch)):
                    documents[(collection, doc_id)] = (source, title, doc_metadata)
        return documents

    def chunk_ids(self) -> Iterator[int]:
        for (cid,) in self.conn.execute("SELECT id FROM chunks ORDER BY id"):
            yield cid

