#!/usr/bin/env python3
"""Question answering over SQuAD v1.1 dev and CMRC 2018 dev: retrieval and answer quality.

Every distinct paragraph is a document (id = article title + paragraph number); a question's
gold document is its paragraph. The paragraphs are indexed with rag's defaults, then a fixed
random sample of questions (seed 0) is asked one at a time, as a user would, through each
generator. Figures: retrieval Recall@1/5 (documents, in rank order), answer EM and F1 (SQuAD
normalisation; characters for Chinese), "contains" (the share of questions whose answer holds a
gold answer, normalised the same way; an abstention does not), "cites source" (the share of the
answered questions that cite their gold paragraph), abstention rate, grounded rate and answer
latency p50/p95. Citation markers are removed before scoring.

Then the local generator's speed on a few SQuAD questions: time to first token, decode tokens/s
and questions/s, for the default and for each knob turned (fp32, no prompt-lookup decoding, one
torch thread, batches of 8 as `rag ask --file` sends them), with how many answers stay the same.

    python3 benchmarks/qa_bench.py                                  # SQuAD 500 + CMRC 300, both generators
    python3 benchmarks/qa_bench.py --previous --generators local    # the previous default beside today's
    python3 benchmarks/qa_bench.py --squad 40 --cmrc 20 --no-record  # a quick look
    python3 benchmarks/qa_bench.py --squad 0 --cmrc 0 --speed 24     # the speed table alone
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from answer_bench import PREVIOUS
from benchmark_record import RECORD_FILE, append_section, machine
from rag.evaluate.run import evaluate, evaluation_steps, prepare_squad

REPO_ROOT = Path(__file__).resolve().parent.parent


def datasets_dir() -> Path:
    root = Path(os.environ.get("RAG_DATASETS") or REPO_ROOT.parent / "shared" / "datasets")
    if not root.is_dir():
        sys.exit(f"qa_bench: datasets folder {root} not found (set RAG_DATASETS)")
    return root


def run_dataset(name: str, path: Path, n: int, generators: list[str], workdir: Path,
                overrides: dict[str, str], previous: bool = False) -> dict[str, Any]:
    """Index the paragraphs, then score each generator through `rag eval squad --answers`'s own
    code; with `previous`, also the previous default local configuration, on the same index."""
    from rag import Engine, Settings

    settings = {"index.path": str(workdir / f"{name}-index"), **overrides}
    engine = Engine(Settings.load(overrides=settings))
    started = time.perf_counter()
    questions, qrels = prepare_squad(engine, str(path), n, 0, None)
    print(f"[{name}] indexed in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"questions": len(questions), "generators": {}}
    runs = [(g, g, engine) for g in generators]
    if previous:
        runs.insert(0, ("local (previous default: gemma-3-270m)", "local",
                        Engine(Settings.load(overrides={**settings, **PREVIOUS}), embedder=engine.embedder)))
    for label, generator, engine in runs:
        engine.ask("warm-up question?", generator=generator)  # model load and first-call costs

        steps = evaluation_steps(questions, qrels, answers=True)

        def progress(i: int, label: str = label) -> None:
            if i % 50 == 0:
                print(f"[{name} {label}] {i}/{steps}", file=sys.stderr, flush=True)

        report = evaluate(engine, name, questions, qrels, None, 5, answers=True, generator=generator,
                          on_question=progress)
        result.update(report.retrieval)
        latency = report.latency_ms["answer.total"]
        result["generators"][label] = {**report.answers, "p50_s": latency["p50"] / 1000,
                                       "p95_s": latency["p95"] / 1000}
        engine.close()
    return result


# The default generator's speed, and what each knob is worth on this CPU: (label, settings, how).
SPEED_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("default (bf16, cached system prompt, prompt lookup 10)", {}, "stream"),
    ("fp32", {"generate.local_precision": "fp32"}, "stream"),
    ("no prompt-lookup decoding", {"generate.local_prompt_lookup": 0}, "stream"),
    ("one torch thread", {}, "stream-1-thread"),
    ("default, batches of 8 (rag ask --file)", {}, "batch"),
]


def generation_speed(path: Path, n: int, workdir: Path, overrides: dict[str, str]) -> str:
    """Time to first token, decode tokens/s and questions/s of the local generator on `n` SQuAD
    questions, streamed one at a time as `rag ask` does (or in batches of 8 as `rag ask --file`
    does), under each of SPEED_CONFIGS; "same answers" counts the answers equal to the default's."""
    import torch

    from rag import Engine, Settings
    from rag.evaluate.metrics import percentile

    settings = {"index.path": str(workdir / "squad-index"), **overrides}
    base = Engine(Settings.load(overrides=settings))
    questions = [q.question for q in prepare_squad(base, str(path), n, 0, None)[0]]
    rows = ["| configuration | first token p50 s | decode tokens/s p50 | prompt tokens p50 | answer p50 s "
            "| questions/s | same answers as default |", "|---|---:|---:|---:|---:|---:|---:|"]
    reference: list[str] | None = None
    threads = torch.get_num_threads()
    for label, extra, how in SPEED_CONFIGS:
        engine = Engine(Settings.load(overrides={**settings, **extra}), embedder=base.embedder) if extra else base
        torch.set_num_threads(1 if how == "stream-1-thread" else threads)
        engine.ask("warm-up question?", generator="local")
        started = time.perf_counter()
        if how == "batch":
            answers = [a for i in range(0, len(questions), 8) for a in engine.ask_many(questions[i:i + 8])]
        else:
            answers = [list(engine.ask_stream(q))[-1] for q in questions]
        seconds = time.perf_counter() - started
        torch.set_num_threads(threads)
        texts = [a.answer for a in answers]
        reference = reference or texts
        streamed = [a for a in answers if a.timings.get("first_token") and a.tokens.get("completion", 0) > 1]
        first = [a.timings["first_token"] for a in streamed]
        decode = [(a.tokens["completion"] - 1) / max(a.timings["total"] - a.timings["first_token"], 1e-6)
                  for a in streamed]
        prompt = [a.tokens.get("prompt", 0) for a in answers]
        total = [a.timings.get("total", 0.0) for a in answers]
        same = sum(a == b for a, b in zip(texts, reference))
        streaming = f"{percentile(first, 50):.2f} | {percentile(decode, 50):.1f}" if how != "batch" else "- | -"
        rows.append(f"| {label} | {streaming} | {percentile(prompt, 50):.0f} | {percentile(total, 50):.2f} | "
                    f"{len(questions) / seconds:.2f} | {same}/{len(questions)} |")
        print(rows[-1], file=sys.stderr, flush=True)
        if engine is not base:
            engine.close()
    base.close()
    return "\n".join(rows)


def _share(g: dict[str, Any], key: str) -> str:
    return f"{g[key]:.1%}" if key in g else "-"  # cites_source is absent when every question abstained


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| dataset | questions | Recall@1 | Recall@5 | generator | EM | F1 | contains | cites source | abstained "
            "| grounded | p50 s | p95 s |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        for gen, g in r["generators"].items():
            rows.append(f"| {name} | {r['questions']} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | {gen} | "
                        f"{g['EM']:.1f} | {g['F1']:.1f} | {_share(g, 'contains')} | {_share(g, 'cites_source')} | "
                        f"{g['abstained']:.1%} | {g['grounded']:.1%} | {g['p50_s']:.2f} | {g['p95_s']:.2f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--squad", type=int, default=500, help="SQuAD questions (0 to skip; default 500)")
    p.add_argument("--cmrc", type=int, default=300, help="CMRC 2018 questions (0 to skip; default 300)")
    p.add_argument("--generators", default="local,extractive", help="comma-separated (default: local,extractive)")
    p.add_argument("--previous", action="store_true",
                   help="also the previous default local configuration (gemma-3-270m), side by side")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for this run, e.g. generate.local_decoding=free (repeatable)")
    p.add_argument("--speed", type=int, default=24, metavar="N",
                   help="SQuAD questions for the generator speed table (0 to skip; default 24)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RECORD_FILE.relative_to(REPO_ROOT)}")
    args = p.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    data = datasets_dir()
    generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    started = dt.datetime.now(dt.timezone.utc)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
        if args.squad:
            results["SQuAD v1.1 dev"] = run_dataset("squad", data / "squad-v1.1-dev" / "dev-v1.1.json", args.squad,
                                                    generators, Path(tmp), overrides, args.previous)
        if args.cmrc:
            results["CMRC 2018 dev"] = run_dataset("cmrc", data / "cmrc2018" / "cmrc2018_dev_squad.json", args.cmrc,
                                                   generators, Path(tmp), overrides, args.previous)
        speed = generation_speed(data / "squad-v1.1-dev" / "dev-v1.1.json", args.speed, Path(tmp), overrides) \
            if args.speed else ""
    text = table(results) if results else ""
    if speed:
        text += ("\n\n" if text else "") + f"The local generator's speed, {args.speed} SQuAD questions (one at a " \
            "time, streamed; or in batches of 8):\n\n" + speed
    print(text)
    if not args.no_record:
        command = "python3 benchmarks/qa_bench.py" + "".join(f" {a}" for a in sys.argv[1:] if a != "--no-record")
        settings = "".join(f", {k}={v}" for k, v in overrides.items())
        append_section(f"Question answering: {', '.join(results) or 'generator speed'}", started, [
            f"Machine: {machine()}, GPU: none; rag defaults (config.toml){settings}",
            "Questions: a fixed random sample (seed 0), asked one at a time; latency is per question",
            f"Reproduce: `{command}`"], text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
