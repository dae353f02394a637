#!/usr/bin/env python3
"""`rag tune` on SciFact: fine-tuned on the train split's judged claims, measured on the test split.

The SciFact corpus (5,183 abstracts) is indexed once with rag's defaults (into --workdir, reused
on the next run); the 809 train claims with their judged abstracts are the pairs, the 300 test
claims the --eval set. Prints the dense side-by-side table (Recall@5, MRR@10, nDCG@10) and the
training time per 1,000 pairs on this CPU. Hybrid figures need the index re-embedded with the
tuned model (`rag index --reembed`), which this does not do.

    python3 benchmarks/tune_bench.py [--epochs 1] [--limit 200] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmark_record import append_section, cpu_flags, machine  # noqa: E402

from rag import Engine, Settings  # noqa: E402
from rag.evaluate.datasets import read_beir  # noqa: E402
from rag.tune import TuneOptions, tune  # noqa: E402
from rag.tune.train import TrainOptions  # noqa: E402


def _write_split(data: Path, split: str, path: Path, limit: int | None) -> int:
    """The split's judged claims as `rag eval qa` records with their gold abstracts."""
    beir = read_beir(data, split)
    records = [{"id": qid, "question": text, "doc_ids": sorted(d for d, rel in beir.qrels[qid].items() if rel > 0)}
               for qid, text in beir.queries.items()]
    records = [r for r in records if r["doc_ids"]][:limit]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return len(records)


def _index(engine: Engine, data: Path) -> None:
    if engine.store.exists():
        return
    beir = read_beir(data, "test")
    started = time.perf_counter()
    engine.index_jsonl((json.dumps({"id": d.doc_id, "title": d.title, "text": d.text}).encode() + b"\n"
                        for d in beir.documents()), "corpus.jsonl")
    print(f"indexed SciFact in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=str(REPO_ROOT / "indexes" / "tune"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="train on the first N train claims only")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-record", action="store_true", help="do not append the figures to docs/benchmarks.md")
    args = p.parse_args()
    started_at = dt.datetime.now(dt.timezone.utc)
    data = Path(os.environ.get("RAG_DATASETS", REPO_ROOT.parent / "shared" / "datasets")) / "beir-scifact"
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    engine = Engine(Settings.load(overrides={"index.path": str(work / "scifact-index")}))
    _index(engine, data)
    pairs, held = work / "train.jsonl", work / "test.jsonl"
    trained = _write_split(data, "train", pairs, args.limit)
    _write_split(data, "test", held, None)
    options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=args.seed, negatives=args.negatives)
    report = tune(engine, TuneOptions(pairs, work / f"model-e{args.epochs}-s{args.seed}", eval_file=held,
                                      training=options))
    engine.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print(f"SciFact: {trained} train claims -> {report.train_pairs} pairs; {report.eval_questions} test claims; "
          f"{report.chunks} chunks; {args.epochs} epoch(s), batch {args.batch_size}, seed {args.seed}")
    print("| metric | current | tuned |\n|---|---:|---:|")
    for metric, before in report.current.items():
        print(f"| {metric} (dense) | {before:.4f} | {report.tuned[metric]:.4f} |")
    summary = (f"training {report.train_seconds:.0f} s = {report.seconds_per_1000_pairs:.0f} s per 1,000 pairs per "
               f"epoch; whole run {report.total_seconds:.0f} s; recommended: {report.recommended} ({report.reason})")
    print(summary)
    if not args.no_record:
        table = "| metric (dense) | current | tuned |\n|---|---:|---:|\n" + "\n".join(
            f"| {metric} | {before:.4f} | {report.tuned[metric]:.4f} |" for metric, before in report.current.items())
        append_section("rag tune on SciFact: train claims as pairs, measured on the test claims", started_at, [
            f"Machine: {machine()}, GPU: none",
            f"CPU flags (`grep -m1 flags /proc/cpuinfo`): {' '.join(cpu_flags())}",
            f"{report.train_pairs} pairs from {trained} train claims, {report.eval_questions} test claims as --eval, "
            f"{report.chunks:,} chunks; {args.epochs} epoch(s), batch {args.batch_size}, learning rate "
            f"{args.learning_rate:g}, {args.negatives} hard negative(s), seed {args.seed}; dense retrieval (hybrid "
            "needs the index re-embedded with the tuned model)", summary,
            "Reproduce: `python3 benchmarks/tune_bench.py`"], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
