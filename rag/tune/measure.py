"""Dense retrieval of held-out questions over the index's chunks, with one model or another.

Both models embed the same chunk texts in memory on the same backend (torch) and precision, so
the comparison is of the weights alone. Hybrid (BM25 + dense) figures need the index itself
re-embedded with the tuned model (`rag index --reembed`); they are not measured here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rag.config import EmbeddingSettings
from rag.embed import Embedder
from rag.evaluate.metrics import Qrels, mrr_at_k, ndcg_at_k, recall_at_k
from rag.tune.corpus import Corpus, ranked_documents
from rag.tune.mining import gold_documents
from rag.tune.pairs import Pair

REPORTED = ("recall@5", "mrr@10", "ndcg@10")


def torch_embedder(settings: EmbeddingSettings, model: str | Path) -> Embedder:
    """An embedder of `model` with the index's prefixes and normalization, on torch."""
    return Embedder(settings.model_copy(update={"model": str(model), "backend": "torch"}))


def held_out_qrels(pairs: list[Pair], corpus: Corpus) -> tuple[list[Pair], Qrels]:
    """The held-out pairs whose gold documents are in the index, and their judgements."""
    judged = [(p, gold_documents(p, corpus)) for p in pairs]
    kept = [(p, gold) for p, gold in judged if gold & set(corpus.doc_ids)]
    return [p for p, _ in kept], {p.qid: {d: 1 for d in gold} for p, gold in kept}


def scores(embedder: Embedder, chunk_vectors: np.ndarray, corpus: Corpus, pairs: list[Pair],
           qrels: Qrels) -> dict[str, float]:
    """Recall@5, MRR@10 and nDCG@10 of dense retrieval over the gold documents."""
    queries = embedder.embed_queries([p.question for p in pairs])
    run = dict(zip((p.qid for p in pairs), ranked_documents(queries, chunk_vectors, corpus.doc_ids)))
    return {"recall@5": recall_at_k(run, qrels, 5), "mrr@10": mrr_at_k(run, qrels, 10),
            "ndcg@10": ndcg_at_k(run, qrels, 10)}
