"""Training rows from pairs: each question's positive chunk and hard negatives from the index.

The positive of a question with gold documents is the gold documents' chunk the current model
scores highest for it (a document's other chunks may not answer it). Hard negatives are the
current model's top hits outside the gold documents, skipping near-duplicates of the positive
(cosine above 0.95, or the same text): those are likely unjudged answers, and training them
away would teach the model to push answers down."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rag.tune.corpus import Corpus
from rag.tune.pairs import Pair

NEAR_DUPLICATE = 0.95
SEARCH_DEPTH = 30


@dataclass
class Rows:
    """Columns for the trainer (texts without prefixes) and what was left out, and why."""

    anchor: list[str] = field(default_factory=list)
    positive: list[str] = field(default_factory=list)
    negatives: list[list[str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def gold_documents(pair: Pair, corpus: Corpus) -> set[str]:
    """The documents that answer a pair: its doc_ids, else those holding its passage or answer."""
    if pair.doc_ids:
        return set(pair.doc_ids)
    if pair.passage is not None:
        text = pair.passage.strip()
        return {d for t, d in zip(corpus.texts, corpus.doc_ids) if t.strip() == text}
    return corpus.documents_containing(pair.answers)


def _negatives(scores: np.ndarray, positive: np.ndarray, positive_text: str, gold: set[str],
               corpus: Corpus, vectors: np.ndarray, wanted: int) -> list[str]:
    """The best-scoring chunks outside the gold documents that are not near-copies of the positive."""
    depth = min(len(scores), SEARCH_DEPTH)
    top = np.argpartition(-scores, depth - 1)[:depth] if depth < len(scores) else np.arange(len(scores))
    found: list[str] = []
    for i in top[np.lexsort((top, -scores[top]))]:
        text = corpus.texts[i]
        if corpus.doc_ids[i] in gold or text.strip() == positive_text.strip():
            continue
        if float(vectors[i] @ positive) > NEAR_DUPLICATE or text in found:
            continue
        found.append(text)
        if len(found) == wanted:
            break
    return found


def mine(pairs: list[Pair], corpus: Corpus, vectors: np.ndarray, query_vectors: np.ndarray,
         passage_vectors: dict[int, np.ndarray], wanted: int) -> Rows:
    """One row per usable pair; `passage_vectors` holds the vectors of pairs given as passages."""
    rows = Rows()
    for n, pair in enumerate(pairs):
        scores = vectors @ query_vectors[n]
        gold = gold_documents(pair, corpus)
        if pair.passage is not None:
            positive_text, positive = pair.passage, passage_vectors[n]
        else:
            mine_ = corpus.chunks_of(gold)
            if not mine_:
                rows.skip("gold document not in the index" if pair.doc_ids else "no chunk holds the answer")
                continue
            best = max(mine_, key=lambda i: (float(scores[i]), -i))
            positive_text, positive = corpus.texts[best], vectors[best]
        negatives = _negatives(scores, positive, positive_text, gold, corpus, vectors, wanted) if wanted else []
        rows.anchor.append(pair.question)
        rows.positive.append(positive_text)
        rows.negatives.append(negatives)
    return rows
