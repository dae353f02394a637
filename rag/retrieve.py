"""Question in, ranked passages out: dense (FAISS) and BM25 rankings fused, optionally reranked.

Fusion (search.fusion) is either a weighted sum of each retriever's scores divided by its best
score ("scores", the default: on SciFact and SQuAD it ranks the right passage first more often,
because it keeps how far ahead a clear winner is), or weighted reciprocal rank fusion ("rrf": a
chunk scores weight / (rrf_k + rank) in each ranking that holds it). A question in a language the embedding model does not cover (embedding.languages)
is ranked by BM25 alone, so an English-only model cannot drag down a good Chinese lexical
ranking. A metadata filter restricts both searches to the chunks it admits.
"""

from __future__ import annotations

import numpy as np

from rag.config import SearchSettings
from rag.embed import Embedder
from rag.errors import ConfigError
from rag.filters import Filter
from rag.index.reader import IndexReader
from rag.index.rows import ShownChunk
from rag.names import SEARCH_MODES as MODES
from rag.names import SearchMode as Mode
from rag.prompt import detect_language
from rag.records import Hit
from rag.timing import StageClock


def _over_best(ranking: list[tuple[int, float]]) -> dict[int, float]:
    best = max(score for _, score in ranking)
    return {cid: score / best if best > 0 else 0.0 for cid, score in ranking}


class Reranker:
    """A sentence-transformers CrossEncoder from a local folder (never downloaded)."""

    def __init__(self, path: str) -> None:
        from pathlib import Path

        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"search.reranker = {path!r} is not a local model folder (with config.json); "
                              "rag never downloads models")
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(folder), local_files_only=True)

    def scores(self, question: str, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.predict([(question, t) for t in texts], show_progress_bar=False),
                          dtype=np.float32).reshape(len(texts), -1)[:, -1]


class Retriever:
    def __init__(self, reader: IndexReader, embedder: Embedder, settings: SearchSettings,
                 languages: list[str], reranker: Reranker | None = None) -> None:
        self.reader = reader
        self.embedder = embedder
        self.settings = settings
        self.languages = languages
        self.reranker = reranker

    def _allowed(self, filters: list[Filter]) -> np.ndarray | None:
        """The chunk ids the filters allow (None: all): a person's access from the version's
        access map, the other filters from SQLite."""
        rows = self.reader.chunks.rows
        others = [f for f in filters if f.op != "access"]
        allowed = rows.matching_chunk_ids(others) if others else None
        for access in (f for f in filters if f.op == "access"):
            readable = rows.access_map().allowed(*access.value)
            allowed = readable if allowed is None else np.intersect1d(allowed, readable, assume_unique=True)
        return allowed

    def _dense_understands(self, question: str) -> bool:
        return "*" in self.languages or detect_language(question) in self.languages

    def search(self, question: str, k: int, filters: list[Filter] | None = None, mode: Mode | None = None) -> list[Hit]:
        return self.search_many([question], k, filters=filters, mode=mode)[0]

    def search_many(self, questions: list[str], k: int, timings: dict[str, float] | None = None,
                    filters: list[Filter] | None = None, mode: Mode | None = None) -> list[list[Hit]]:
        """Ranked hits per question; `timings` (if given) gets seconds per stage."""
        mode = mode or self.settings.mode
        if mode not in MODES:
            raise ConfigError(f"search mode {mode!r}: choose one of {', '.join(MODES)}")
        lexical = self.reader.lexical
        if mode == "hybrid" and lexical is None:
            mode = "dense"  # an index written before BM25 existed, until its next write
        clock = StageClock({})
        with clock("filter"):
            allowed = self._allowed(filters or [])
        depth = max(k, self.settings.candidates) if mode == "hybrid" or self.reranker else k
        if self.reranker:
            depth = max(depth, self.settings.rerank_top_n)

        dense: list[list[tuple[int, float]]] = [[] for _ in questions]
        use_dense = [mode == "dense" or (mode == "hybrid" and self._dense_understands(q)) for q in questions]
        if any(use_dense):
            with clock("embed"):
                vectors = self.embedder.embed_queries([q for q, use in zip(questions, use_dense) if use])
            with clock("search"):
                found = iter(self.reader.search(vectors, depth, allowed))
                dense = [next(found) if use else [] for use in use_dense]

        sparse: list[list[tuple[int, float]]] = [[] for _ in questions]
        if mode in ("hybrid", "bm25"):
            if lexical is None:
                raise ConfigError(f"index {self.reader.directory.parent} has no BM25 index yet (written by an "
                                  "older rag); run `rag index` on it once, or use --mode dense")
            with clock("bm25"):
                sparse = [list(zip(ids.tolist(), scores.tolist())) for ids, scores in lexical.search_many(
                    questions, depth, allowed)]

        with clock("fuse"):
            fused = [self._fuse(d, s, mode) for d, s in zip(dense, sparse)]
        keep = max(k, self.settings.rerank_top_n) if self.reranker else k
        with clock("fetch"):
            rows = self.reader.chunks.rows.get_chunks({cid for ranking in fused for cid, _ in ranking[:keep]}, filters)
            out = [self._hits(ranking[:keep], rows, d, s) for ranking, d, s in zip(fused, dense, sparse)]
        if self.reranker:
            with clock("rerank"):
                out = [self._rerank(q, hits) for q, hits in zip(questions, out)]
        if timings is not None:
            for stage, seconds in clock.stages.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
        return [hits[:k] for hits in out]

    def _fuse(self, dense: list[tuple[int, float]], sparse: list[tuple[int, float]], mode: str) -> list[tuple[int, float]]:
        if mode == "dense" or not sparse:
            return dense if mode != "bm25" else sparse
        if mode == "bm25" or not dense:
            return sparse
        s = self.settings
        scores: dict[int, float] = {}
        if s.fusion == "rrf":
            for weight, ranking in ((s.dense_weight, dense), (s.bm25_weight, sparse)):
                for rank, (cid, _) in enumerate(ranking, start=1):
                    scores[cid] = scores.get(cid, 0.0) + weight / (s.rrf_k + rank)
        else:
            # Each list's scores over its best: 1.0 for the top chunk of each retriever. A chunk
            # only one retriever proposed gets the other's lowest candidate score.
            normalized = [_over_best(ranking) for ranking in (dense, sparse)]
            floors = [min(n.values()) for n in normalized]
            for cid in set(normalized[0]) | set(normalized[1]):
                scores[cid] = (s.dense_weight * normalized[0].get(cid, floors[0])
                               + s.bm25_weight * normalized[1].get(cid, floors[1]))
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))

    @staticmethod
    def _hits(ranking: list[tuple[int, float]], rows: dict[int, ShownChunk], dense: list[tuple[int, float]],
              sparse: list[tuple[int, float]]) -> list[Hit]:
        cosine, bm25 = dict(dense), dict(sparse)
        hits = []
        for cid, score in ranking:
            row = rows.get(cid)
            if row is None:  # an id FAISS holds but SQLite does not: `rag check` reports it
                continue
            metadata = {**row.metadata, "ordinal": row.ordinal}
            if row.title is not None:
                metadata["title"] = row.title
            # Each retriever's own score, for display and for the relevance floor.
            metadata["scores"] = {name: round(float(v[cid]), 6) for name, v in (("dense", cosine), ("bm25", bm25))
                                  if cid in v}
            hits.append(Hit(row.text, float(score), row.doc_id, row.source, metadata, cid))
        return hits

    def _rerank(self, question: str, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        top = hits[: self.settings.rerank_top_n]
        scores = self.reranker.scores(question, [h.text for h in top])  # type: ignore[union-attr]
        order = np.argsort(-scores, kind="stable")
        reranked = []
        for i in order:
            hit = top[int(i)]
            metadata = {**hit.metadata, "scores": {**hit.metadata.get("scores", {}), "rerank": float(scores[i])}}
            reranked.append(Hit(hit.text, float(scores[i]), hit.doc_id, hit.source, metadata, hit.chunk_id))
        return reranked + hits[len(top):]
