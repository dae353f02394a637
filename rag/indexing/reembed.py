"""Re-embedding an index with another embedding model (`rag index --reembed --model DIR`).

The chunks, texts, documents and BM25 stay as they are; only the vectors are made again, from
each chunk's text with the heading path in front as the chunker put it (rag.chunk), by the new
model. It is one write (rag.index.writer with `reembed`): the commit merges every segment into
one whose vectors come from here, and the version goes live all at once, so searches answer
from the old version until then and a killed re-embed leaves the old version live.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from rag.chunk import HEADING_JOINER
from rag.embed import Embedder, resolve_model
from rag.indexing.report import IndexProgress, NoProgress

# Chunks read and embedded at a time: progress is reported after each.
BATCH = 256


def model_record(model: str) -> dict[str, Any]:
    """The model folder and a hash of its files, recorded beside Embedder.identity(), so the
    manifest says which model made the vectors, not only its folder's name."""
    _, path = resolve_model(model)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return {"model_path": str(path), "model_sha256": digest.hexdigest()}


class Reembedding:
    """Called by the writer's commit with the merged segment's chunks.sqlite: returns every
    chunk's new vector and the chunk ids, reporting chunks done to `progress`."""

    def __init__(self, embedder: Embedder, heading_prefix: bool, progress: IndexProgress | None = None) -> None:
        self.embedder = embedder
        self.heading_prefix = heading_prefix
        self.progress = progress or NoProgress()
        self._counter: Any = None
        self._prefix_limit = 0

    def __call__(self, chunks_file: Path) -> tuple[np.ndarray, np.ndarray]:
        conn = sqlite3.connect(f"file:{chunks_file}?mode=ro", uri=True)
        try:
            total = int(conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
            self.progress.start(total, total)
            ids: list[int] = []
            parts = [np.zeros((0, self.embedder.dimension), dtype=np.float32)]
            cursor = conn.execute("SELECT id, text, metadata FROM chunks ORDER BY id")
            while rows := cursor.fetchmany(BATCH):
                texts = [self.embed_text(text, json.loads(metadata)) for _, text, metadata in rows]
                parts.append(self.embedder.embed_passages(texts))
                ids.extend(row[0] for row in rows)
                self.progress.advance(len(rows), 0, len(rows))
        finally:
            conn.close()
        return np.concatenate(parts), np.asarray(ids, dtype=np.int64)

    def embed_text(self, text: str, metadata: dict[str, Any]) -> str:
        """What the chunker embedded: the text, after the heading path when chunking.heading_prefix
        was on, shortened from the left to a third of what the model takes (rag.chunk.Chunker._prefix)."""
        headings = metadata.get("headings") if self.heading_prefix else None
        if not headings or not isinstance(headings, list):
            return text
        parts = [str(h) for h in headings]
        while parts:
            prefix = HEADING_JOINER.join(parts) + "\n"
            if self._count(prefix) <= self._prefix_limit:
                return prefix + text
            parts.pop(0)
        return text

    def _count(self, text: str) -> int:
        if self._counter is None:
            from rag.chunk import HFTokenCounter

            counter = HFTokenCounter(self.embedder.tokenizer)
            prefix = self.embedder.settings.passage_prefix
            room = self.embedder.max_seq_length - counter.special_tokens - (counter.count(prefix) if prefix else 0)
            self._counter, self._prefix_limit = counter, room // 3
        return int(self._counter.count(text))
