#!/usr/bin/env python3
"""Conversations: follow-ups searched and answered with their history, beside the same questions
asked as their last turn alone and written to stand alone, in one run.

1. The sample follow-up set (corpora/followup_qa.jsonl: 47 conversations over corpora/, 63
   follow-ups, 10 of them unanswerable), indexed with rag's defaults into a temporary folder:
   - retrieval Recall@5 (and @1, MRR@10) of the follow-ups' gold documents, searched as: the
     last turn alone; the history combined without a model (what the default local generator,
     `rag search` and /v1/search search); the local model's rewrite (answer.rewrite = "rewrite",
     what an openai generator gets by default); the standalone question;
   - answers (the default generator, one at a time as a user asks): containing the reference,
     refused, citing the gold document, and unanswerable follow-ups answered "I don't know",
     asked with the history (the defaults: combined, the turns in the prompt), with the history
     rewritten by the local model, as the last turn alone, and standalone;
   - latency: what the conversation code adds to a first question (no history) and to a
     standalone question with history (the follow-up test says no); what a follow-up's answer
     takes with its history against its standalone form (p50 over the follow-ups the test
     finds); and what the local model's rewrite of a follow-up costs (p50, p95).
2. A public multi-turn set with reference passages, MTRAG (IBM, Apache-2.0), converted by
   benchmarks/multiturn_data.py into a scratch folder (never committed): Recall@5 of every
   follow-up as its last turn and with its history combined, and, on the first
   --rewrite-conversations conversations, with the generator's rewrite too.

    python3 benchmarks/multiturn_data.py RAW OUT --extract-from-mirrors   # once, see its header
    python3 benchmarks/conversation_bench.py --public OUT                 # appended to docs/benchmarks.md
    python3 benchmarks/conversation_bench.py --no-answers --no-record     # retrieval only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmark_record import append_section, machine
from rag import Engine, Settings
from rag.conversation import needs_context
from rag.evaluate.datasets import EvalQuestion, read_qa_jsonl
from rag.evaluate.metrics import percentile, retrieval_report
from rag.evaluate.run import answer_scores

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT / "corpora"
Qrels = dict[str, dict[str, int]]
ANSWER_WAYS = ("history", "rewritten", "last_turn", "standalone")


class Asker:
    """The ways a follow-up is searched, each a function from the question to its query."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.answerer = engine.answerer()
        self.rewrite_seconds: list[float] = []

    def last_turn(self, q: EvalQuestion) -> str:
        return q.question

    def combined(self, q: EvalQuestion) -> str:
        return self.engine.search_query(q.question, list(q.history))

    def rewritten(self, q: EvalQuestion) -> str:
        with rewriting(self.engine):
            started = time.perf_counter()
            (asked,) = self.answerer.standalones([q.question], [list(q.history)], [[]])
        if asked.contextual:
            self.rewrite_seconds.append(time.perf_counter() - started)
        return asked.query

    @staticmethod
    def standalone(q: EvalQuestion) -> str:
        return q.standalone or q.question


@contextmanager
def rewriting(engine: Engine) -> Iterator[None]:
    """answer.rewrite = "rewrite" for a while: the local model writes follow-ups standalone (the
    same loaded model; "auto" combines for it)."""
    answerer = engine.answerer()
    saved = answerer.rewriting
    answerer.rewriting = replace(saved, mode="rewrite")
    try:
        yield
    finally:
        answerer.rewriting = saved


def recall(engine: Engine, questions: list[EvalQuestion], qrels: Qrels, query: Callable[[EvalQuestion], str],
           show: bool = False) -> dict[str, float | int]:
    """Retrieval of each question's gold documents when it is searched as `query` says."""
    run = {}
    for q in questions:
        text = query(q)
        hits = engine.search(text, 100)
        run[q.qid] = list(dict.fromkeys(h.doc_id for h in hits))[:100]
        if show and q.doc_id not in run[q.qid][:5]:
            print(f"    miss {q.qid}: {text!r} -> {run[q.qid][:3]}")
    return retrieval_report(run, {q.qid: qrels[q.qid] for q in questions}, ks=(1, 5, 10))


def answers(engine: Engine, questions: list[EvalQuestion], way: str) -> tuple[dict[str, Any], list[dict]]:
    """Ask each question as `way` says; the scores of rag eval qa --answers and each one's timings."""
    pairs, timings = [], []
    for q in questions:
        question, history = {"history": (q.question, list(q.history)), "rewritten": (q.question, list(q.history)),
                             "last_turn": (q.question, []), "standalone": (q.standalone or q.question, [])}[way]
        with rewriting(engine) if way == "rewritten" else nullcontext():
            answer = engine.ask(question, history=history)
        pairs.append((q, answer))
        timings.append(answer.timings)
    return answer_scores(pairs), timings


def overhead_ms(engine: Engine, questions: list[str], history: list[Any]) -> dict[str, float]:
    """What deciding whether a question is a follow-up adds to it (rag.answering.standalones)."""
    answerer = engine.answerer()
    spent = []
    for question in questions:
        started = time.perf_counter()
        answerer.standalones([question], [list(history)], [[]])
        spent.append(1000 * (time.perf_counter() - started))
    return {"p50": percentile(spent, 50), "p95": percentile(spent, 95)}


def sample_set(index: Path, with_answers: bool) -> dict[str, Any]:
    engine = Engine(Settings.load(overrides={"index.path": str(index)}, environ={}))
    followups = read_qa_jsonl(CORPUS / "followup_qa.jsonl")
    judged = [q for q in followups if q.doc_id]
    qrels = {q.qid: {q.doc_id: 1} for q in judged}
    asker = Asker(engine)
    engine.ask("warm-up question?")  # the model load is not a rewrite's latency
    result: dict[str, Any] = {"followups": len(followups), "judged": len(judged),
                              "contextual": sum(needs_context(q.question, list(q.history)) for q in followups)}
    result["retrieval"] = {name: recall(engine, judged, qrels, way, show=name == "rewrite") for name, way in (
        ("last turn", asker.last_turn), ("history, combined", asker.combined), ("history, rewritten", asker.rewritten),
        ("standalone", asker.standalone))}
    result["rewrite_s"] = {"p50": percentile(asker.rewrite_seconds, 50), "p95": percentile(asker.rewrite_seconds, 95),
                           "n": len(asker.rewrite_seconds)}
    firsts = [q.question for q in read_qa_jsonl(CORPUS / "sample_qa.jsonl")]
    standalone_followups = [q for q in followups if not needs_context(q.question, list(q.history))]
    result["overhead_ms"] = {
        "first question (no history)": overhead_ms(engine, firsts, []),
        "standalone question with history": {
            k: percentile([overhead_ms(engine, [q.question], list(q.history))["p50"] for q in standalone_followups], p)
            for k, p in (("p50", 50), ("p95", 95))}}
    if with_answers:
        result["answers"], result["answer_total_s"] = {}, {}
        contextual = [i for i, q in enumerate(followups) if needs_context(q.question, list(q.history))]
        for way in ANSWER_WAYS:
            scores, timings = answers(engine, followups, way)
            result["answers"][way] = scores
            result["answer_total_s"][way] = percentile([timings[i]["total"] for i in contextual], 50)
            print(f"  answers, {way}: {json.dumps(scores)}", flush=True)
    engine.close()
    return result


def read_public(folder: Path) -> tuple[list[EvalQuestion], Qrels, dict[str, str]]:
    """MTRAG's follow-ups (turns with history) from multiturn_data.py's questions.jsonl, their
    gold passages (every one of `doc_ids`) and, where the file has one, MTRAG's LLM rewrite."""
    questions, qrels, conversations = [], {}, {}
    for line in (folder / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if not record.get("history"):
            continue
        q = read_qa_record(record)
        questions.append(q)
        qrels[q.qid] = {d: 1 for d in record.get("doc_ids") or [record["doc_id"]]}
        conversations[q.qid] = record["id"].split("<::>")[0]
    return questions, qrels, conversations


def read_qa_record(record: dict[str, Any]) -> EvalQuestion:
    from rag.conversation import turns_from

    return EvalQuestion(record["id"], record["question"], (), record["doc_id"],
                        history=tuple(turns_from(record["history"])),
                        standalone=record.get("standalone") or record.get("standalone_llm"))


def public_set(folder: Path, index: Path, rewrite_conversations: int) -> dict[str, Any]:
    engine = Engine(Settings.load(overrides={"index.path": str(index)}, environ={}))
    if not (index / "CURRENT").exists():
        started = time.perf_counter()
        engine.index([folder / "corpus.jsonl"])
        print(f"  indexed MTRAG's corpus in {time.perf_counter() - started:.0f} s", flush=True)
    questions, qrels, conversations = read_public(folder)
    asker = Asker(engine)
    chosen = sorted(set(conversations.values()), key=list(conversations.values()).index)[:rewrite_conversations]
    subset = [q for q in questions if conversations[q.qid] in chosen]
    result: dict[str, Any] = {"followups": len(questions), "conversations": len(set(conversations.values())),
                              "subset_followups": len(subset), "subset_conversations": len(chosen)}
    ways = [("last turn", asker.last_turn), ("history, combined", asker.combined)]
    if all(q.standalone for q in questions):
        ways.append(("MTRAG's LLM rewrite", asker.standalone))
    result["all"] = {name: recall(engine, questions, qrels, way) for name, way in ways}
    result["subset"] = {name: recall(engine, subset, qrels, way) for name, way in
                        [*ways, ("history, rewritten", asker.rewritten)]}
    result["rewrite_s"] = {"p50": percentile(asker.rewrite_seconds, 50), "p95": percentile(asker.rewrite_seconds, 95),
                           "n": len(asker.rewrite_seconds)}
    engine.close()
    return result


def _retrieval_table(rows: dict[str, dict[str, float | int]]) -> str:
    lines = ["| searched as | Recall@1 | Recall@5 | Recall@10 | MRR@10 | questions |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | {r['recall@10']:.3f} | "
                     f"{r['mrr@10']:.3f} | {r['queries']} |")
    return "\n".join(lines)


def report(sample: dict[str, Any], public: dict[str, Any] | None) -> str:
    parts = [f"Sample follow-up set: {sample['followups']} follow-ups ({sample['contextual']} lean on the "
             f"conversation by the follow-up test), {sample['judged']} with a gold document.\n",
             _retrieval_table(sample["retrieval"])]
    r = sample["retrieval"]
    parts.append(f"\nRecall@5 with the history is {r['history, combined']['recall@5'] / r['standalone']['recall@5']:.1%} "
                 f"of the standalone figure combined (the default), "
                 f"{r['history, rewritten']['recall@5'] / r['standalone']['recall@5']:.1%} rewritten.")
    if "answers" in sample:
        a = sample["answers"]
        parts.append("\n| asked as | contains | refused (answerable) | cites source | unanswerable: I don't know | "
                     "answer p50 s (follow-ups) |\n|---|---:|---:|---:|---:|---:|")
        for way in ANSWER_WAYS:
            s = a[way]
            parts.append(f"| {way.replace('_', ' ')} | {s['contains']:.1%} | {s['refused_answerable']:.1%} | "
                         f"{s.get('cites_source', 0):.1%} | {s['unanswerable_abstained']:.1%} "
                         f"({s['unanswerable']}) | {sample['answer_total_s'][way]:.2f} |")
        parts.append(f"\nAnswers containing the reference with the history: "
                     f"{a['history']['contains'] / a['standalone']['contains']:.1%} of the standalone figure "
                     f"(rewritten: {a['rewritten']['contains'] / a['standalone']['contains']:.1%}; the last turn "
                     f"alone: {a['last_turn']['contains'] / a['standalone']['contains']:.1%}). A follow-up's answer "
                     f"took {sample['answer_total_s']['history'] - sample['answer_total_s']['standalone']:+.2f} s "
                     "(p50) with its history than its standalone form.")
    o, w = sample["overhead_ms"], sample["rewrite_s"]
    parts.append("\nLatency: " + "; ".join(f"{k}: p50 {v['p50']:.3f} ms, p95 {v['p95']:.3f} ms" for k, v in o.items())
                 + f"; the local model's rewrite of a follow-up (answer.rewrite = \"rewrite\", {w['n']} follow-ups): "
                 f"p50 {w['p50']:.2f} s, p95 {w['p95']:.2f} s.")
    if public:
        parts.append(f"\nMTRAG: {public['followups']} follow-ups of {public['conversations']} conversations "
                     "(Recall@k over all of a turn's gold passages):\n")
        parts.append(_retrieval_table(public["all"]))
        parts.append(f"\nThe first {public['subset_conversations']} conversations ({public['subset_followups']} "
                     "follow-ups), with the generator's rewrite:\n")
        parts.append(_retrieval_table(public["subset"]))
        pw = public["rewrite_s"]
        parts.append(f"\nRewrite latency on MTRAG ({pw['n']} follow-ups): p50 {pw['p50']:.2f} s, p95 {pw['p95']:.2f} s.")
    return "\n".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--public", type=Path, help="multiturn_data.py's output folder (corpus.jsonl, questions.jsonl)")
    p.add_argument("--public-index", type=Path, help="where MTRAG's corpus is (or is to be) indexed")
    p.add_argument("--rewrite-conversations", type=int, default=20,
                   help="MTRAG conversations whose follow-ups are also rewritten by the generator")
    p.add_argument("--index", type=Path, help="an index of corpora/ to use instead of building one")
    p.add_argument("--no-answers", action="store_true", help="retrieval and latency only")
    p.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = p.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="conversation-bench-") as scratch:
        index = args.index or Path(scratch) / "index"
        if args.index is None:
            Engine(Settings.load(overrides={"index.path": str(index)}, environ={})).index([CORPUS])
        sample = sample_set(index, not args.no_answers)
        print(f"  sample set: {json.dumps(sample)}", flush=True)  # kept in the log should a later part fail
        public = None
        if args.public:
            public = public_set(args.public, args.public_index or Path(scratch) / "public-index",
                                args.rewrite_conversations)
    body = report(sample, public)
    print(body)
    if not args.no_record:
        command = "python3 benchmarks/conversation_bench.py" + (" --public OUT" if args.public else "") + \
                  (" --no-answers" if args.no_answers else "")
        append_section("Conversations: follow-ups with their history, as the last turn, standalone", started,
                       [f"Machine: {machine()}, GPU: none; rag defaults (config.toml)", f"Reproduce: `{command}`"],
                       body)


if __name__ == "__main__":
    main()
