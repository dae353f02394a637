"""Standard retrieval and answer metrics, written out so that `rag eval` needs no evaluation library.

Retrieval metrics follow trec_eval (and so BEIR): gains are the graded relevance, judgements of 0
or below are not relevant, and queries with no relevant document are left out of the mean. Answer
metrics follow the official SQuAD v1.1 script; Chinese is scored by characters. Two more answer
measures: whether the answer contains a gold answer (the same normalisation), and whether it
cites the gold document.
"""

from __future__ import annotations

import collections
import math
import re
import string
import unicodedata
from typing import Callable, Iterable, Sequence

# query id -> document ids, best first; query id -> {document id: graded relevance}
Run = dict[str, list[str]]
Qrels = dict[str, dict[str, int]]


def _mean_over_judged(run: Run, qrels: Qrels, k: int, score: Callable[[list[str], dict[str, int]], float]) -> float:
    """Mean of `score(top_k, relevant)` over the queries that have a relevant document."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = []
    for qid, judged in qrels.items():
        relevant = {doc: rel for doc, rel in judged.items() if rel > 0}
        if not relevant:
            continue
        ranking = run.get(qid, [])
        if len(set(ranking)) != len(ranking):
            raise ValueError(f"the ranking of query {qid!r} lists a document twice; keep each document's best rank")
        scores.append(score(ranking[:k], relevant))
    if not scores:
        raise ValueError("no query in the qrels has a relevant document (relevance > 0); nothing to average")
    return math.fsum(scores) / len(scores)


def _dcg(gains: Iterable[float]) -> float:
    return math.fsum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def ndcg_at_k(run: Run, qrels: Qrels, k: int) -> float:
    """nDCG@k with linear gains (trec_eval's ndcg_cut): rewards putting the most relevant documents first."""

    def score(top: list[str], relevant: dict[str, int]) -> float:
        ideal = _dcg(sorted(relevant.values(), reverse=True)[:k])
        return _dcg(relevant.get(doc, 0) for doc in top) / ideal

    return _mean_over_judged(run, qrels, k, score)


def recall_at_k(run: Run, qrels: Qrels, k: int) -> float:
    """Share of the relevant documents found in the top k: what a generator given k passages can see."""
    return _mean_over_judged(run, qrels, k, lambda top, relevant: sum(d in relevant for d in top) / len(relevant))


def mrr_at_k(run: Run, qrels: Qrels, k: int) -> float:
    """Mean reciprocal rank of the first relevant document in the top k (0 when there is none)."""

    def score(top: list[str], relevant: dict[str, int]) -> float:
        return next((1 / rank for rank, doc in enumerate(top, start=1) if doc in relevant), 0.0)

    return _mean_over_judged(run, qrels, k, score)


def retrieval_report(run: Run, qrels: Qrels, ks: Sequence[int] = (1, 5, 10, 100)) -> dict[str, float | int]:
    """nDCG@10 and MRR@10 (the figures BEIR and MS MARCO report), recall at each of `ks`, and the query count."""
    report: dict[str, float | int] = {"ndcg@10": ndcg_at_k(run, qrels, 10)}
    report.update({f"recall@{k}": recall_at_k(run, qrels, k) for k in ks})
    report["mrr@10"] = mrr_at_k(run, qrels, 10)
    report["queries"] = sum(any(rel > 0 for rel in judged.values()) for judged in qrels.values())
    return report


# -- Answers: SQuAD v1.1 normalisation; characters for Chinese ------------------------------------

_ASCII_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# CJK Unified Ideographs, Extension A, Compatibility Ideographs, Extensions B and later.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_CJK_CHAR = re.compile(f"[{_CJK}]")
# One CJK character, or one run of other letters and digits (a Latin word, a number).
_UNITS = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")


def _normalize_en(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _is_zh_punctuation(ch: str) -> bool:
    # Unicode punctuation covers ，。！？；：「」『』（）《》〈〉、“”‘’—…·; ～ is a symbol CMRC also drops.
    return ch in _ASCII_PUNCTUATION or ch == "～" or unicodedata.category(ch).startswith("P")


def _normalize_zh(text: str) -> str:
    return "".join(ch for ch in text.lower() if not ch.isspace() and not _is_zh_punctuation(ch))


def _tokens(text: str, chinese: bool) -> list[str]:
    return list(_normalize_zh(text)) if chinese else _normalize_en(text).split()


def _check_golds(golds: Sequence[str]) -> None:
    if not golds:
        raise ValueError("no gold answer to compare with; leave questions without one out of answer scoring")


def is_chinese(text: str) -> bool:
    """Whether most of the text is Chinese, counting a Latin word or a number as one unit like a character.

    Picks the scoring: word tokens mean nothing in Chinese, which has no spaces between words.
    """
    units = _UNITS.findall(text)
    return sum(_CJK_CHAR.match(u) is not None for u in units) * 2 > len(units)


def exact_match(prediction: str, golds: Sequence[str], chinese: bool = False) -> float:
    """1.0 when the prediction equals one of the gold answers after normalisation, else 0.0."""
    _check_golds(golds)
    normalize = _normalize_zh if chinese else _normalize_en
    return float(any(normalize(prediction) == normalize(gold) for gold in golds))


def f1_score(prediction: str, golds: Sequence[str], chinese: bool = False) -> float:
    """Best token-overlap F1 against the gold answers: partial credit for a span that is nearly right.

    Tokens are words for English and characters for Chinese (a bag of characters; CMRC 2018's own
    script takes the longest common substring of mixed word/character units instead, so its F1 can be lower).
    """
    _check_golds(golds)
    predicted = _tokens(prediction, chinese)
    best = 0.0
    for gold in golds:
        reference = _tokens(gold, chinese)
        same = sum((collections.Counter(predicted) & collections.Counter(reference)).values())
        if same:
            precision, recall = same / len(predicted), same / len(reference)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_reference(prediction: str, golds: Sequence[str], chinese: bool = False) -> float:
    """1.0 when the prediction, normalised as for EM and F1, holds a normalised gold answer as a substring.

    The lenient companion of exact match: a whole sentence that quotes the reference counts, where
    EM gives it 0 and F1 little. English is compared as normalised text (lower case, no punctuation
    or articles, single spaces) and Chinese as its characters without spaces or punctuation, as F1
    counts them. English matches whole words only, so "25 days" is not found in "125 days";
    Chinese, without word boundaries, matches characters. Pass "" for an abstention: an empty
    prediction contains nothing, and a gold answer that normalises to nothing (say "the") never
    matches.
    """
    _check_golds(golds)
    if chinese:
        predicted = _normalize_zh(prediction)
        return float(any(reference and reference in predicted for reference in map(_normalize_zh, golds)))
    predicted = f" {_normalize_en(prediction)} "
    return float(any(reference and f" {reference} " in predicted for reference in map(_normalize_en, golds)))


def cites_source(cited_doc_ids: Iterable[str], gold_doc_id: str) -> float:
    """1.0 when one of the answer's citations is the gold document (same doc_id), else 0.0.

    Citing other documents as well still counts; citing nothing or only other documents does not.
    """
    if not gold_doc_id:
        raise ValueError("no gold document to look for; leave questions without a doc_id out of citation scoring")
    return float(gold_doc_id in set(cited_doc_ids))


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0 to 100) by linear interpolation, as numpy's default: latency p50 and p95."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
