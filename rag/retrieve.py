"""Question in, ranked passages out (dense retrieval over the FAISS index)."""

from __future__ import annotations

import time

from rag.embed import Embedder
from rag.index.store import IndexReader
from rag.records import Hit


class DenseRetriever:
    def __init__(self, reader: IndexReader, embedder: Embedder) -> None:
        self.reader = reader
        self.embedder = embedder

    def search(self, question: str, k: int) -> list[Hit]:
        return self.search_many([question], k)[0]

    def search_many(self, questions: list[str], k: int, timings: dict[str, float] | None = None) -> list[list[Hit]]:
        """Ranked hits per question; `timings` (if given) gets 'embed' and 'search' seconds."""
        started = time.perf_counter()
        vectors = self.embedder.embed_queries(questions)
        embedded = time.perf_counter()
        results = self.reader.search(vectors, k)
        rows = self.reader.chunks.get_chunks({cid for hits in results for cid, _ in hits})
        out: list[list[Hit]] = []
        for hits in results:
            ranked = []
            for cid, score in hits:
                row = rows.get(cid)
                if row is None:  # an id FAISS holds but SQLite does not: `rag check` reports it
                    continue
                metadata = {**row["metadata"], "ordinal": row["ordinal"]}
                if row["title"] is not None:
                    metadata["title"] = row["title"]
                ranked.append(Hit(row["text"], score, row["doc_id"], row["source"], metadata, cid))
            out.append(ranked)
        if timings is not None:
            timings["embed"] = timings.get("embed", 0.0) + embedded - started
            timings["search"] = timings.get("search", 0.0) + time.perf_counter() - embedded
        return out
