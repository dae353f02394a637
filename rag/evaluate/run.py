"""`rag eval`: index a benchmark (or use the user's own index), ask its questions one at a time as
a user would, and score the rankings and, optionally, the answers.

Documents are ranked by their best chunk (a document's first appearance in the chunk ranking),
which is what BEIR-style qrels judge.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rag.citations import Answer, strip_citations
from rag.conversation import Turn
from rag.engine import Engine
from rag.evaluate.datasets import EvalDocument, EvalQuestion, read_beir, read_qa_jsonl, read_squad, sample
from rag.evaluate.metrics import (Qrels, Run, cites_source, contains_reference, exact_match, f1_score, is_chinese,
                                  percentile, retrieval_report)
from rag.indexing import IndexProgress

# Chunks retrieved per question: enough to rank 100 distinct documents in most cases.
CHUNK_DEPTH = 200


@dataclass
class EvalReport:
    dataset: str
    mode: str
    questions: int
    retrieval: dict[str, float | int] = field(default_factory=dict)
    answers: dict[str, float | int] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    index: str = ""
    seconds: float = 0.0
    # Follow-ups (questions with history): their scores asked each way (WAYS) side by side.
    conversation: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "mode": self.mode, "questions": self.questions, "index": self.index,
                "retrieval": self.retrieval, "answers": self.answers, "latency_ms": self.latency_ms,
                "seconds": round(self.seconds, 2), **({"conversation": self.conversation} if self.conversation else {})}


# How a follow-up is asked in the side-by-side: with its conversation (what a person gets), as
# its last turn alone (what a system without conversations gets), and written to stand alone
# (the ceiling a rewrite aims at; only where the file gives it).
WAYS = ("history", "last_turn", "standalone")


def _asked(q: EvalQuestion, way: str) -> tuple[str, list[Turn]]:
    """(question, history) of a question asked one of the WAYS."""
    if way == "history":
        return q.question, list(q.history)
    return (q.standalone or q.question) if way == "standalone" else q.question, []


def _records(documents: Iterable[EvalDocument]) -> Iterator[bytes]:
    for d in documents:
        record = {"id": d.doc_id, "text": d.text, **({"title": d.title} if d.title else {})}
        yield (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _latency(per_question: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    stages = sorted({stage for t in per_question for stage in t})
    return {stage: {"p50": 1000 * percentile([t.get(stage, 0.0) for t in per_question], 50),
                    "p95": 1000 * percentile([t.get(stage, 0.0) for t in per_question], 95)} for stage in stages}


def _rank(engine: Engine, questions: list[EvalQuestion], mode: str | None, k: int,
          one_done: Callable[[], None], way: str = "history") -> tuple[Run, list[dict[str, float]]]:
    run: Run = {}
    timings = []
    for q in questions:
        spent: dict[str, float] = {}
        started = time.perf_counter()
        question, history = _asked(q, way)
        hits = engine.search_many([question], max(k, CHUNK_DEPTH), mode=mode, timings=spent,
                                  histories=[history])[0]
        spent["total"] = time.perf_counter() - started
        run[q.qid] = list(dict.fromkeys(h.doc_id for h in hits))[:max(k, 100)]
        timings.append(spent)
        one_done()
    return run, timings


def answer_scores(pairs: Iterable[tuple[EvalQuestion, Answer]]) -> dict[str, float | int]:
    """The `--answers` summary of questions and the answers they got; keys appear when they apply.

    Over every question: `answered` (how many did not abstain), `abstained` and `grounded` (shares).
    Over the `scored` questions that have gold answers: `EM` and `F1` (0 to 100, SQuAD), `contains`
    (share whose answer contains a gold answer, see `contains_reference`) and `refused_answerable`
    (share that abstained); an abstention scores 0 on EM, F1 and `contains`. Over the
    `cites_source_questions` answered questions that have a gold doc_id: `cites_source`, the share
    whose citations include that document. Over the `unanswerable` questions the file marks
    `"answerable": false`: `unanswerable_abstained`, the share answered "I don't know".
    Citation markers are removed before EM, F1 and `contains`.
    """
    asked = answered = grounded = 0
    ems, f1s, contains, refused, cites, unanswerable = [], [], [], [], [], []
    for q, answer in pairs:
        asked += 1
        answered += not answer.abstained
        grounded += answer.grounded
        text = "" if answer.abstained else strip_citations(answer.answer)
        if q.answers:
            chinese = is_chinese(q.question)
            ems.append(exact_match(text, q.answers, chinese))
            f1s.append(f1_score(text, q.answers, chinese))
            contains.append(contains_reference(text, q.answers, chinese))
            refused.append(answer.abstained)
        if q.doc_id and not answer.abstained:
            cites.append(cites_source((c.doc_id for c in answer.citations), q.doc_id))
        if q.unanswerable:
            unanswerable.append(answer.abstained)
    n = max(asked, 1)
    scores: dict[str, float | int] = {"answered": answered, "abstained": (asked - answered) / n,
                                      "grounded": grounded / n}
    if ems:
        scores.update(EM=100 * sum(ems) / len(ems), F1=100 * sum(f1s) / len(f1s), scored=len(ems),
                      contains=sum(contains) / len(contains), refused_answerable=sum(refused) / len(refused))
    if cites:
        scores.update(cites_source=sum(cites) / len(cites), cites_source_questions=len(cites))
    if unanswerable:
        scores.update(unanswerable=len(unanswerable), unanswerable_abstained=sum(unanswerable) / len(unanswerable))
    return scores


def _answers(engine: Engine, questions: list[EvalQuestion], generator: str | None,
             one_done: Callable[[], None], way: str = "history") -> tuple[list[Answer], list[dict[str, float]]]:
    answers, timings = [], []
    for q in questions:
        question, history = _asked(q, way)
        answer = engine.ask(question, generator=generator, history=history)
        timings.append({f"answer.{k}": v for k, v in answer.timings.items()})
        answers.append(answer)
        one_done()
    return answers, timings


def _conversation(engine: Engine, questions: list[EvalQuestion], qrels: Qrels, mode: str | None, k: int,
                  done: tuple[Run, list[Answer] | None], generator: str | None,
                  one_done: Callable[[], None]) -> dict[str, Any]:
    """The follow-ups' retrieval and answer scores with their history (from the main run), with
    the last turn alone and, where the file gives it, written standalone: side by side, over the
    same questions."""
    run, answered = done
    followups = [q for q in questions if q.history]
    ways = [w for w in WAYS if w != "standalone" or all(q.standalone for q in followups)]
    judged = [q for q in followups if q.qid in qrels]
    report: dict[str, Any] = {"questions": len(followups), "ways": ways, "retrieval": {}, "answers": {}}
    by_id = {q.qid: a for q, a in zip(questions, answered)} if answered is not None else {}
    for way in ways:
        if judged:
            ranked = {q.qid: run[q.qid] for q in judged} if way == "history" else \
                _rank(engine, judged, mode, k, one_done, way)[0]
            report["retrieval"][way] = retrieval_report(ranked, {q.qid: qrels[q.qid] for q in judged}, ks=(1, 5, 10))
        if answered is not None:
            answers = [by_id[q.qid] for q in followups] if way == "history" else \
                _answers(engine, followups, generator, one_done, way)[0]
            report["answers"][way] = answer_scores(zip(followups, answers))
    return report


def evaluation_steps(questions: list[EvalQuestion], qrels: Qrels, answers: bool) -> int:
    """How many times `evaluate` calls `on_question`: each judged question ranked, then (with
    `answers`) every question answered, then the follow-ups asked the other WAYS. The total of a
    progress bar."""
    followups = [q for q in questions if q.history]
    others = 1 + all(q.standalone for q in followups)  # last turn alone, and standalone where given
    extra = others * (sum(q.qid in qrels for q in followups) + (len(followups) if answers else 0)) if followups else 0
    return sum(q.qid in qrels for q in questions) + (len(questions) if answers else 0) + extra


def evaluate(engine: Engine, name: str, questions: list[EvalQuestion], qrels: Qrels, mode: str | None, k: int,
             answers: bool = False, generator: str | None = None,
             on_question: Callable[[int], None] = lambda i: None) -> EvalReport:
    """Rank the judged questions (and with `answers`, answer every question); `on_question(n)`
    after each step, n counting up to `evaluation_steps(...)`."""
    started = time.perf_counter()
    steps = itertools.count(1)

    def one_done() -> None:
        on_question(next(steps))

    report = EvalReport(name, mode or engine.settings.search.mode, len(questions), index=str(engine.store.path))
    judged = [q for q in questions if q.qid in qrels]
    run: Run = {}
    if judged:
        run, timings = _rank(engine, judged, mode, k, one_done)
        report.retrieval = retrieval_report(run, {q.qid: qrels[q.qid] for q in judged}, ks=(1, 5, 10, 100))
        report.latency_ms = _latency(timings)
    answered = None
    if answers:
        answered, timings = _answers(engine, questions, generator, one_done)
        report.answers = answer_scores(zip(questions, answered))
        report.latency_ms.update(_latency(timings))
    if any(q.history for q in questions):
        report.conversation = _conversation(engine, questions, qrels, mode, k, (run, answered), generator, one_done)
    report.seconds = time.perf_counter() - started
    return report


def prepare_beir(engine: Engine, directory: str, split: str, limit: int | None, seed: int,
                 progress: IndexProgress | None) -> tuple[list[EvalQuestion], Qrels]:
    data = read_beir(directory, split)
    engine.index_jsonl(_records(data.documents()), f"{directory}/corpus.jsonl", progress)
    questions = [EvalQuestion(qid, text) for qid, text in data.queries.items()]
    chosen = sample(questions, limit, seed)
    return chosen, {q.qid: data.qrels[q.qid] for q in chosen}


def prepare_squad(engine: Engine, path: str, limit: int | None, seed: int,
                  progress: IndexProgress | None) -> tuple[list[EvalQuestion], Qrels]:
    data = read_squad(path)
    engine.index_jsonl(_records(data.documents), path, progress)
    chosen = sample(data.questions, limit, seed)
    return chosen, {q.qid: {q.doc_id: 1} for q in chosen if q.doc_id}


def prepare_qa(path: str, limit: int | None, seed: int) -> tuple[list[EvalQuestion], Qrels]:
    chosen = sample(read_qa_jsonl(path), limit, seed)
    return chosen, {q.qid: {q.doc_id: 1} for q in chosen if q.doc_id}
