"""What a version's documents are: listings, the filters' facets, a document's chunks, counts.

Read-only queries over the `documents` and `chunks` of a connection (tables, or the views over a
version's segments), for `rag info`, the service's document routes and the page's filter controls.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from rag.filters import Filter, exact_expression, to_sql
from rag.records import DocumentChunk, DocumentSummary, Facet, Facets, FolderFacet, TimeRange


def _document_row(row: tuple[Any, ...]) -> DocumentSummary:
    # Not which other document holds its content: that one may lie outside the caller's filters.
    collection, doc_id, source, title, mtime, sha256, fmt, metadata, indexed_at, chunks = row
    return DocumentSummary(collection, doc_id, source, title, mtime, sha256, fmt, json.loads(metadata), indexed_at,
                           int(chunks))


class Catalog:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # Documents matching filters: a document matches when one of its chunks (or, for a document
    # sharing another's content, one of that document's chunks) does, as in search.
    _MATCHING_DOCUMENTS = ("FROM documents d LEFT JOIN chunks c ON c.collection = d.collection "
                           "AND c.doc_id = COALESCE(d.content_of, d.doc_id) WHERE {where}")

    def list_documents(self, filters: list[Filter], offset: int, limit: int) -> tuple[int, list[DocumentSummary]]:
        """(how many documents match, one page of them in collection and id order)."""
        where, params = to_sql(filters)
        matching = self._MATCHING_DOCUMENTS.format(where=where)
        total = self.conn.execute(f"SELECT COUNT(DISTINCT d.collection || char(0) || d.doc_id) {matching}",
                                  params).fetchone()[0]
        rows = self.conn.execute(
            "SELECT d.collection, d.doc_id, d.source, d.title, d.mtime, d.sha256, d.format, d.metadata, "
            "d.indexed_at, (SELECT COUNT(*) FROM chunks n WHERE n.collection = d.collection "
            "AND n.doc_id = COALESCE(d.content_of, d.doc_id)) "
            f"{matching} GROUP BY d.collection, d.doc_id ORDER BY d.collection, d.doc_id LIMIT ? OFFSET ?",
            [*params, limit, offset])
        return int(total), [_document_row(row) for row in rows]

    def matching_documents(self, filters: list[Filter]) -> list[tuple[str, str]]:
        """(collection, doc_id) of every document matching the filters."""
        where, params = to_sql(filters)
        return [(c, d) for c, d in self.conn.execute(
            f"SELECT DISTINCT d.collection, d.doc_id {self._MATCHING_DOCUMENTS.format(where=where)} "
            "ORDER BY d.collection, d.doc_id", params)]

    def facets(self, filters: list[Filter]) -> Facets:
        """What the documents matching the filters are made of, for filter controls that always
        find something: how many documents there are per collection, per format and per top-level
        folder of their sources, each with the filter expression that selects exactly it, and the
        range of their modification times (epoch seconds, as documents list them).

        Folders are counted below the folder all the sources share: sources are often absolute
        paths, whose first component would put every document in one folder. A document lying
        directly in that shared folder, or in none (an upload, a record), counts in no folder."""
        where, params = to_sql(filters)
        rows = self.conn.execute(
            "WITH docs AS (SELECT DISTINCT d.collection, d.doc_id, d.format, d.source, d.mtime "
            f"{self._MATCHING_DOCUMENTS.format(where=where)}) "
            "SELECT 'collection', collection, COUNT(*) FROM docs GROUP BY collection "
            "UNION ALL SELECT 'format', format, COUNT(*) FROM docs WHERE format IS NOT NULL GROUP BY format "
            # rtrim(s, s's characters but '/') cuts the file name off: the source's folder, ending in '/'.
            "UNION ALL SELECT 'folder', rtrim(source, replace(source, '/', '')), COUNT(*) FROM docs GROUP BY 2 "
            "UNION ALL SELECT 'first', MIN(mtime), COUNT(*) FROM docs "
            "UNION ALL SELECT 'last', MAX(mtime), COUNT(*) FROM docs", params).fetchall()

        folders: dict[str, int] = {}
        directories = [(name[:-1].split("/"), int(n)) for kind, name, n in rows if kind == "folder" and name]
        shared = os.path.commonprefix([parts for parts, _ in directories]) if directories else []
        for parts, n in directories:
            if len(parts) > len(shared) and parts[len(shared)]:
                top = "/".join(parts[:len(shared) + 1])
                folders[top] = folders.get(top, 0) + n
        first, last = (next(value for kind, value, _ in rows if kind == end) for end in ("first", "last"))
        return Facets(
            documents=next(int(n) for kind, _, n in rows if kind == "first"),
            collections=[Facet(name, int(n), exact_expression("collection", name))
                         for kind, name, n in sorted(rows) if kind == "collection"],
            formats=[Facet(name, int(n), exact_expression("format", name))
                     for kind, name, n in sorted(rows) if kind == "format"],
            folders=[FolderFacet(top.rsplit("/", 1)[-1], n, exact_expression("source", top + "/") + "*", top)
                     for top, n in sorted(folders.items())],
            mtime=TimeRange(first, last) if first is not None else None,
        )

    def document_chunks(self, collection: str, doc_id: str) -> list[DocumentChunk]:
        """A document's chunks in order (those of the document holding its content, if shared)."""
        rows = self.conn.execute(
            "SELECT c.id, c.ordinal, c.text, c.metadata, d.source, d.title FROM documents d JOIN chunks c "
            "ON c.collection = d.collection AND c.doc_id = COALESCE(d.content_of, d.doc_id) "
            "WHERE d.collection = ? AND d.doc_id = ? ORDER BY c.ordinal, c.id", (collection, doc_id))
        out = []
        for cid, ordinal, text, metadata, source, title in rows:
            chunk = json.loads(metadata)  # this document's source and title, not the holder's
            chunk.update({k: v for k, v in (("source", source), ("title", title)) if k in chunk})
            out.append(DocumentChunk(cid, ordinal, text, chunk))
        return out

    def counts(self) -> dict[str, int]:
        documents = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        masked = self.conn.execute("SELECT COUNT(*) FROM masked").fetchone()[0] if _has_table(self.conn, "masked") else 0
        return {"documents": int(documents), "chunks": int(chunks), "masked": int(masked)}

    def collection_counts(self) -> dict[str, int]:
        """Documents per collection, for `rag info`."""
        return {c: int(n) for c, n in self.conn.execute(
            "SELECT collection, COUNT(*) FROM documents GROUP BY collection ORDER BY collection")}


    def row_problems(self) -> list[str]:
        problems = []
        orphans = self.conn.execute(
            "SELECT COUNT(*) FROM chunks c LEFT JOIN documents d ON d.collection = c.collection "
            "AND d.doc_id = c.doc_id WHERE d.doc_id IS NULL"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} chunks belong to no document")
        dangling = self.conn.execute(
            "SELECT COUNT(*) FROM documents a LEFT JOIN documents d ON d.collection = a.collection "
            "AND d.doc_id = a.content_of WHERE a.content_of IS NOT NULL "
            "AND (d.doc_id IS NULL OR d.content_of IS NOT NULL)").fetchone()[0]
        if dangling:
            problems.append(f"{dangling} documents share the content of a document that does not hold it")
        return problems


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    return bool(conn.execute(f"PRAGMA table_info({table})").fetchall())
