"""Documents, chunks and document problems as JSON, the form they cross a Ray cluster in.

Ray Data moves rows as Arrow tables of these strings and of raw vector bytes, so nothing
a user's file holds is ever pickled on its way between the workers and the writer.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from rag.errors import IngestError, RagError, SkipDocument
from rag.records import Chunk, Document, Section


def document_to_json(document: Document, sections: bool = True) -> dict[str, Any]:
    return {
        "doc_id": document.doc_id, "metadata": document.metadata, "size": document.size,
        "where": document.where, "origin": document.origin, "ocr_seconds": document.ocr_seconds,
        "sections": [{"text": s.text, "headings": list(s.headings), "page": s.page,
                      "table_header": s.table_header, "table_rows": list(s.table_rows),
                      "row_numbers": list(s.row_numbers), "metadata": s.metadata}
                     for s in document.sections] if sections else [],
    }


def document_from_json(data: dict[str, Any]) -> Document:
    return Document(data["doc_id"], [Section(s["text"], tuple(s["headings"]), s["page"], s["table_header"],
                                             tuple(s["table_rows"]), tuple(s.get("row_numbers", ())),
                                             s.get("metadata") or {}) for s in data["sections"]],
                    data["metadata"], data["size"], data["where"], data["origin"], data.get("ocr_seconds", 0.0))


def chunk_to_json(chunk: Chunk) -> dict[str, Any]:
    return {"doc_id": chunk.doc_id, "ordinal": chunk.ordinal, "text": chunk.text, "embed_text": chunk.embed_text,
            "metadata": chunk.metadata, "token_ids": chunk.token_ids}


def chunk_from_json(data: dict[str, Any]) -> Chunk:
    return Chunk(data["doc_id"], data["ordinal"], data["text"], data["embed_text"], data["metadata"],
                 data["token_ids"])


_PROBLEMS: dict[str, type[RagError]] = {"skip": SkipDocument, "ingest": IngestError}


def problem_to_json(error: RagError) -> dict[str, Any]:
    kind = "skip" if isinstance(error, SkipDocument) else "ingest" if isinstance(error, IngestError) else "error"
    return {"kind": kind, "reason": getattr(error, "reason", None) or str(error), "where": getattr(error, "where", None)}


def problem_from_json(data: dict[str, Any]) -> RagError:
    kind = _PROBLEMS.get(data["kind"])
    if kind is None:
        error = RagError(data["reason"])
        error.where = data["where"]  # type: ignore[attr-defined]
        return error
    return kind(data["reason"], data["where"])


def vectors_to_bytes(vectors: np.ndarray) -> bytes:
    return np.ascontiguousarray(vectors, dtype="<f4").tobytes()


def vectors_from_bytes(data: bytes, rows: int, encoded: bool = False) -> np.ndarray:
    """One row a chunk: float32 vectors, or with `encoded` the bytes of each vector encoded for
    the index's trained IVF index (VectorIndex.encode)."""
    flat = np.frombuffer(data, dtype=np.uint8 if encoded else "<f4")
    if rows == 0 or len(flat) % rows:
        raise RagError(f"a Ray worker sent {len(flat)} {'bytes' if encoded else 'numbers'} for {rows} vectors; "
                       "run again")
    return flat.reshape(rows, -1) if encoded else flat.reshape(rows, -1).astype(np.float32)


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)
