#!/usr/bin/env python3
"""Which embedding precision is fastest on which CPU: what `embedding.precision = "auto"` picks
by the CPU's flags (rag/embed.py, resolve_precision).

For each instruction set the CPU's kernels may use, OpenVINO's MiniLM in each precision:
- a query: SciFact test claims embedded one at a time (p50 ms), as a search does;
- passages: the first 600 SciFact abstracts embedded in one call (passages/s), as `rag index` does.
Each row runs in a process of its own with OpenVINO's and oneDNN's kernels capped to that
instruction set (OV_CPU_MAX_ISA, ONEDNN_MAX_CPU_ISA), so one machine with AVX-512, VNNI and bf16
stands in for the CPUs that have less. Capped rows are marked as such: the cores, caches and
memory are this machine's. Retrieval quality per precision is benchmarks/retrieval_bench.py's.

    python3 benchmarks/embed_precision_bench.py            # appended to docs/benchmarks.md
    python3 benchmarks/embed_precision_bench.py --no-record
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmark_record import append_section, machine

REPO_ROOT = Path(__file__).resolve().parent.parent
# (label, cap): the CPU's own kernels, then what a CPU with less has.
CAPS = [("this CPU", None), ("AVX-512 + VNNI, no bf16", "AVX512_CORE_VNNI"),
        ("AVX-512, no VNNI", "AVX512_CORE"), ("AVX2 + FMA", "AVX2")]
PRECISIONS = ("bf16", "fp32", "int8")


def worker(precision: str, data: Path) -> dict[str, Any]:
    from rag import Settings
    from rag.embed import Embedder
    from rag.evaluate.metrics import percentile

    embedder = Embedder(Settings.load(overrides={"embedding.precision": precision}, environ={}).embedding)
    embedder.warm_up()
    queries = [json.loads(line)["text"] for line in (data / "queries.jsonl").open() if line.strip()][:300]
    abstracts = [json.loads(line) for line in (data / "corpus.jsonl").open() if line.strip()][:600]
    texts = [f"{a.get('title', '')}\n{a['text']}" for a in abstracts]
    for q in queries[:10]:
        embedder.embed_queries([q + " (warm-up)"])
    seconds = []
    for q in queries:
        started = time.perf_counter()
        embedder.embed_queries([q])
        seconds.append(time.perf_counter() - started)
    embedder.embed_passages(texts[:32])
    started = time.perf_counter()
    embedder.embed_passages(texts)
    rate = len(texts) / (time.perf_counter() - started)
    return {"backend": embedder.backend, "precision": embedder.precision,
            "query_p50_ms": 1000 * percentile(seconds, 50), "query_p95_ms": 1000 * percentile(seconds, 95),
            "passages_per_s": rate}


def run_worker(precision: str, cap: str | None, data: Path) -> dict[str, Any]:
    environment = dict(os.environ)
    if cap is not None:
        environment.update(OV_CPU_MAX_ISA=cap, ONEDNN_MAX_CPU_ISA=cap)
    done = subprocess.run([sys.executable, __file__, "--worker", precision, "--data", str(data)],
                          check=True, capture_output=True, text=True, env=environment)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", choices=PRECISIONS, help=argparse.SUPPRESS)
    p.add_argument("--data", default=str(Path(os.environ.get("RAG_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
                                         / "beir-scifact"))
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    data = Path(args.data)
    if args.worker:
        print(json.dumps(worker(args.worker, data)))
        return 0
    from rag.embed import cpu_has_native_bf16

    started = dt.datetime.now(dt.timezone.utc)
    rows = ["| kernels | precision | query p50 / p95 ms | passages/s |", "|---|---|---:|---:|"]
    for label, cap in CAPS:
        for precision in PRECISIONS:
            if precision == "bf16" and (cap is not None or not cpu_has_native_bf16()):
                continue  # emulated in fp32 where bf16 is not native: never auto's choice there
            r = run_worker(precision, cap, data)
            rows.append(f"| {label}{'' if cap is None else f' (capped: {cap})'} | {r['backend']} {r['precision']} | "
                        f"{r['query_p50_ms']:.2f} / {r['query_p95_ms']:.2f} | {r['passages_per_s']:.1f} |")
            print(rows[-1], flush=True)
    body = "\n".join(rows)
    print(body)
    if not args.no_record:
        append_section("Embedding precision by CPU kind", started, [
            f"Machine: {machine()}; all-MiniLM-L6-v2 on OpenVINO; 300 SciFact test claims one at a time, then "
            "600 SciFact abstracts in one call; each row a process of its own, capped rows with OpenVINO's and "
            "oneDNN's kernels limited to that instruction set (this machine's cores and memory)",
            "Reproduce: `python3 benchmarks/embed_precision_bench.py`"], body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
