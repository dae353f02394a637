"""The index's live chunks in memory: texts, their documents, and one model's vectors of them.

Held whole in memory (a 384-dimension float32 vector is 1.5 KB; 50,000 chunks are ~75 MB with
their texts): fine for indexes up to tens of thousands of chunks, not for millions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rag.engine import Engine
from rag.errors import RagError


@dataclass
class Corpus:
    """Parallel lists: chunk text and the document it is shown as, in chunk-id order."""

    texts: list[str]
    doc_ids: list[str]

    def chunks_of(self, doc_ids: set[str]) -> list[int]:
        """Positions of the chunks of these documents."""
        return [i for i, d in enumerate(self.doc_ids) if d in doc_ids]

    def documents_containing(self, answers: tuple[str, ...]) -> set[str]:
        """Documents with a chunk that contains one of the answers (case-insensitive)."""
        wanted = [a.lower() for a in answers]
        return {d for t, d in zip(self.texts, self.doc_ids) if any(a in t.lower() for a in wanted)}


def read_corpus(engine: Engine) -> Corpus:
    """Every live chunk of the latest version of the engine's index."""
    reader = engine.reader()
    rows = reader.chunks.rows
    dead = set(int(i) for i in reader.chunks.dead_ids())
    ids = [cid for cid in rows.chunk_ids() if cid not in dead]
    texts, doc_ids = [], []
    for start in range(0, len(ids), 2000):
        shown = rows.get_chunks(ids[start:start + 2000])
        for cid in ids[start:start + 2000]:
            if cid in shown:
                texts.append(shown[cid].text)
                doc_ids.append(shown[cid].doc_id)
    if not texts:
        raise RagError(f"the index at {engine.settings.index.path} holds no chunks to tune on; index documents first")
    return Corpus(texts, doc_ids)


def ranked_documents(query_vectors: np.ndarray, chunk_vectors: np.ndarray, doc_ids: list[str],
                     depth: int = 100) -> list[list[str]]:
    """Each query's documents by their best chunk's score, best first (a document once)."""
    scores = query_vectors @ chunk_vectors.T
    take = min(scores.shape[1], depth * 4)
    runs = []
    for row in scores:
        top = np.argpartition(-row, take - 1)[:take] if take < len(row) else np.arange(len(row))
        order = top[np.lexsort((top, -row[top]))]
        seen: dict[str, None] = {}
        for i in order:
            seen.setdefault(doc_ids[i], None)
            if len(seen) == depth:
                break
        runs.append(list(seen))
    return runs
