#!/usr/bin/env python3
"""Question answering over SQuAD v1.1 dev and CMRC 2018 dev: retrieval and answer quality.

Every distinct paragraph is a document (id = article title + paragraph number); a question's
gold document is its paragraph. The paragraphs are indexed with rag's defaults, then a fixed
random sample of questions (seed 0) is asked one at a time, as a user would, through each
generator. Figures: retrieval Recall@1/5 (documents, in rank order), answer EM and F1 (SQuAD
normalisation; characters for Chinese), abstention rate, grounded rate and answer latency
p50/p95. Citation markers are removed before scoring.

    python3 benchmarks/qa_bench.py                                  # SQuAD 500 + CMRC 300, both generators
    python3 benchmarks/qa_bench.py --squad 40 --cmrc 20 --no-record  # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rag.evaluate.datasets import read_squad, sample
from rag.evaluate.metrics import exact_match, f1_score, percentile

REPO_ROOT = Path(__file__).resolve().parent.parent
RECORD_FILE = REPO_ROOT / "docs" / "benchmarks.md"
_CITATION = re.compile(r"[\[［]\s*\d+(?:\s*[,，]\s*\d+)*\s*[\]］]")


def datasets_dir() -> Path:
    root = Path(os.environ.get("RAG_DATASETS") or REPO_ROOT.parent / "shared" / "datasets")
    if not root.is_dir():
        sys.exit(f"qa_bench: datasets folder {root} not found (set RAG_DATASETS)")
    return root


def run_dataset(name: str, path: Path, n: int, generators: list[str], zh: bool, workdir: Path,
                overrides: dict[str, str]) -> dict[str, Any]:
    from rag import Engine, Settings

    dataset = read_squad(path)
    corpus = workdir / f"{name}.jsonl"
    corpus.write_text("".join(json.dumps({"id": d.doc_id, "text": d.text}, ensure_ascii=False) + "\n"
                              for d in dataset.documents), encoding="utf-8")
    engine = Engine(Settings.load(overrides={"index.path": str(workdir / f"{name}-index"), **overrides}))
    started = time.perf_counter()
    report = engine.index([corpus])
    print(f"[{name}] indexed {report.documents} paragraphs, {report.chunks} chunks in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    questions = sample(dataset.questions, n, seed=0)

    ranks = []
    for q in questions:
        hits = engine.search(q.question, k=20)
        doc_order = list(dict.fromkeys(h.doc_id for h in hits))
        ranks.append(doc_order.index(q.doc_id) + 1 if q.doc_id in doc_order else None)
    result: dict[str, Any] = {
        "paragraphs": len(dataset.documents), "questions": len(questions),
        "recall@1": sum(r == 1 for r in ranks) / len(ranks),
        "recall@5": sum(r is not None and r <= 5 for r in ranks) / len(ranks),
        "generators": {},
    }
    for generator in generators:
        engine.ask("warm-up question?", generator=generator)  # model load and first-call costs
        ems, f1s, latencies, abstained, grounded = [], [], [], 0, 0
        for i, q in enumerate(questions, start=1):
            t = time.perf_counter()
            answer = engine.ask(q.question, generator=generator)
            latencies.append(time.perf_counter() - t)
            text = _CITATION.sub("", answer.answer).strip()
            if answer.abstained:
                abstained += 1
                text = ""
            grounded += answer.grounded
            ems.append(exact_match(text, q.answers, zh))
            f1s.append(f1_score(text, q.answers, zh))
            if i % 10 == 0:
                print(f"[{name} {generator}] {i}/{len(questions)}: EM {100 * statistics.fmean(ems):.1f} "
                      f"F1 {100 * statistics.fmean(f1s):.1f}", file=sys.stderr, flush=True)
        result["generators"][generator] = {
            "EM": 100 * statistics.fmean(ems), "F1": 100 * statistics.fmean(f1s),
            "abstained": abstained / len(questions), "grounded": grounded / len(questions),
            "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
        }
    engine.close()
    return result


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| dataset | questions | Recall@1 | Recall@5 | generator | EM | F1 | abstained | grounded | p50 s | p95 s |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        for gen, g in r["generators"].items():
            rows.append(f"| {name} | {r['questions']} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | {gen} | "
                        f"{g['EM']:.1f} | {g['F1']:.1f} | {g['abstained']:.1%} | {g['grounded']:.1%} | "
                        f"{g['p50_s']:.2f} | {g['p95_s']:.2f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--squad", type=int, default=500, help="SQuAD questions (0 to skip; default 500)")
    p.add_argument("--cmrc", type=int, default=300, help="CMRC 2018 questions (0 to skip; default 300)")
    p.add_argument("--generators", default="local,extractive", help="comma-separated (default: local,extractive)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for this run, e.g. generate.local_decoding=free (repeatable)")
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
                                                    generators, False, Path(tmp), overrides)
        if args.cmrc:
            results["CMRC 2018 dev"] = run_dataset("cmrc", data / "cmrc2018" / "cmrc2018_dev_squad.json", args.cmrc,
                                                   generators, True, Path(tmp), overrides)
    text = table(results)
    print(text)
    if not args.no_record:
        import platform

        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        command = "python3 benchmarks/qa_bench.py" + "".join(
            f" {a}" for a in sys.argv[1:] if a != "--no-record")
        section = (f"\n## Question answering: {', '.join(results)} ({started:%Y-%m-%d %H:%M} UTC)\n\n"
                   f"- Machine: {cpu}, {os.cpu_count()} cores, GPU: none; rag defaults (config.toml)"
                   f"{''.join(f', {k}={v}' for k, v in overrides.items())}\n"
                   f"- Questions: a fixed random sample (seed 0), asked one at a time; latency is per question\n"
                   f"- Reproduce: `{command}`\n\n{text}\n")
        RECORD_FILE.parent.mkdir(parents=True, exist_ok=True)
        with RECORD_FILE.open("a", encoding="utf-8") as fh:
            fh.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
