#!/usr/bin/env python3
"""The same 20,000 records indexed by one process and on a local Ray cluster with 1 and 2 workers.

Records (real text from ../shared/datasets, in this order until 20,000): SciFact's 5,183
abstracts, SQuAD v1.1 dev's 2,067 paragraphs, CMRC 2018's 1,104 paragraphs, SciFact's 1,109
claims and SQuAD's dev questions. Each run writes a new index from the same JSON Lines bytes
(`Engine.index_jsonl`, as `rag index --jsonl` runs it); the Ray runs share one local cluster,
started first and timed on its own. On this machine's 2 cores a cluster adds work (actors,
Arrow rows, a second model load) and takes the cores the single process would use, so expect
overhead, not a speed-up: the point of the run is what Ray costs, and that the three indexes
are the same. The rates feed the projection in docs/scale.md.

    python3 benchmarks/ray_bench.py [--records 20000] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmark_record import append_section, machine
from rag import Engine, RayOptions, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT.parent / "shared" / "datasets"


def records(limit: int) -> bytes:
    rows = []
    with (DATA / "beir-scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            rows.append({"id": f"scifact-{doc['_id']}", "title": doc["title"], "text": doc["text"]})
    squad = json.loads((DATA / "squad-v1.1-dev" / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]
    cmrc = json.loads((DATA / "cmrc2018" / "cmrc2018_dev_squad.json").read_text(encoding="utf-8"))["data"] + \
        json.loads((DATA / "cmrc2018" / "cmrc2018_trial_squad.json").read_text(encoding="utf-8"))["data"]
    for name, articles in (("squad", squad), ("cmrc", cmrc)):
        for a, article in enumerate(articles):
            for n, paragraph in enumerate(article["paragraphs"]):
                rows.append({"id": f"{name}-{a}-{n}", "title": article.get("title") or "", "text": paragraph["context"]})
    with (DATA / "beir-scifact" / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            claim = json.loads(line)
            rows.append({"id": f"claim-{claim['_id']}", "text": claim["text"]})
    for article in squad:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append({"id": f"question-{qa['id']}", "text": qa["question"]})
    if len(rows) < limit:
        raise SystemExit(f"only {len(rows)} records in {DATA}")
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows[:limit])


def contents(engine: Engine) -> list[tuple]:
    conn = engine.reader().chunks.conn
    return conn.execute("SELECT id, doc_id, ordinal, text FROM chunks ORDER BY id").fetchall()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if not (DATA / "beir-scifact").is_dir():
        print(f"needs {DATA} (../shared/datasets)", file=sys.stderr)
        return 2
    import ray

    started = dt.datetime.now(dt.timezone.utc)
    data = records(args.records)
    rows = ["| run | seconds | records/s | chunks/s | chunks | vs one process | writer's own seconds | writer chunks/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    results: dict[str, tuple[float, int]] = {}
    indexes = {}
    with tempfile.TemporaryDirectory(prefix="ray-bench-", dir=REPO_ROOT / "indexes") as tmp:
        embedder = None
        runs = [("one process", None), ("Ray, 1 worker", 1), ("Ray, 2 workers", 2)]
        cluster_start = 0.0
        for label, workers in runs:
            settings = Settings.load(overrides={"index.path": f"{tmp}/{label.replace(' ', '-').replace(',', '')}"})
            engine = Engine(settings, embedder=embedder) if embedder else Engine(settings)
            engine.embedder.warm_up()  # the writer's own model load is not what is compared
            embedder = engine.embedder
            if workers is not None and not ray.is_initialized():
                begun = time.perf_counter()
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
                cluster_start = time.perf_counter() - begun
            begun = time.perf_counter()
            report = engine.index_jsonl(io.BytesIO(data), "records.jsonl", total_bytes=len(data),
                                        ray=RayOptions(workers=workers) if workers else None)
            seconds = time.perf_counter() - begun
            assert report.added == args.records and report.failed == 0, report.as_dict()
            results[label] = (seconds, report.chunks)
            indexes[label] = contents(engine)
            base = results["one process"][0]
            # What the one writer spends itself: writing, plus chunking where it chunks (not on Ray).
            own = report.stages.get("write", 0.0) + report.stages.get("chunk", 0.0)
            rows.append(f"| {label} | {seconds:.1f} | {args.records / seconds:.0f} | {report.chunks / seconds:.0f} | "
                        f"{report.chunks} | {base / seconds:.2f}x | {own:.1f} | {report.chunks / own:.0f} |")
            print(rows[-1], flush=True)
            assert engine.check().problems == []
            engine.close()
        ray.shutdown()
    same = all(rows_ == indexes["one process"] for rows_ in indexes.values())
    body = "\n".join(rows) + (
        f"\n\nStarting the local Ray cluster took {cluster_start:.1f} s more (before the Ray runs). Each Ray run "
        "includes starting its actors and loading the embedding model in each. The writer's own seconds: its "
        "write stage (rows, vectors, BM25 postings and, in one process, BM25 tokenizing) plus, in one process, "
        "chunking; on Ray the workers chunk, embed and tokenize, and the writer's rate bounds a cluster of any size. "
        "The three indexes hold "
        f"{'the same' if same else 'DIFFERENT'} chunk ids, documents and texts. Records: SciFact abstracts, "
        "SQuAD dev and CMRC 2018 paragraphs, SciFact claims, SQuAD dev questions, in that order.")
    print(body.split("\n\n", 1)[1])
    if not args.no_record:
        append_section(f"Indexing {args.records:,} records on Ray and in one process", started, [
            f"Machine: {machine()}; rag defaults (all-MiniLM-L6-v2 on the CPU, Flat index)",
            "Reproduce: `python3 benchmarks/ray_bench.py`"], body)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
