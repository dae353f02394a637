#!/usr/bin/env python3
"""Streaming scale: `rag index --jsonl -` fed N records into an IVF index, then the same N again.

Records are the SciFact abstracts cut into 40-word passages, cycled with a distinct id and a
short distinct suffix (so that deduplication cannot store them once), one chunk each. The first run
reports documents/s, peak RSS of the `rag` process and index size; the second run, on identical
input, must embed nothing. Two sizes side by side show whether peak memory grows with the
corpus beyond the index itself.

    python3 benchmarks/scale_bench.py                    # 50,000 and 200,000 records
    python3 benchmarks/scale_bench.py --sizes 20000 --no-record
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
from benchmark_record import append_section, machine

REPO_ROOT = Path(__file__).resolve().parent.parent


def _passages(scifact: Path, words: int = 40) -> list[str]:
    """SciFact abstracts cut into pieces of `words` words: one chunk each."""
    out = []
    with (scifact / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            tokens = json.loads(line)["text"].split()
            out.extend(" ".join(tokens[i:i + words]) for i in range(0, len(tokens), words) if len(tokens[i:i + words]) > 10)
    return out


def _records(passages: list[str], n: int) -> Iterator[bytes]:
    for i in range(n):
        text = f"{passages[i % len(passages)]} (record {i})"
        yield (json.dumps({"id": f"r{i}", "text": text, "metadata": {"batch": i // 10000}}) + "\n").encode()


def _run(index: Path, passages: list[str], n: int, factory: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    cmd = [sys.executable, "-m", "rag", "index", "--jsonl", "-", "--json", "--index", str(index),
           "--factory", factory]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        process = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak = max(peak, process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert proc.stdin is not None and proc.stdout is not None
    for record in _records(passages, n):
        proc.stdin.write(record)
    proc.stdin.close()
    report = json.loads(proc.stdout.read())
    proc.wait()
    done.set()
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (index / (index / "CURRENT").read_text().strip()).iterdir())
    return {"records": n, "seconds": seconds, "docs_per_s": n / seconds, "peak_rss_mb": peak / 2**20,
            "index_mb": size / 2**20, "embedded": report["chunks"], "added": report["added"],
            "unchanged": report["unchanged"], "rc": proc.returncode}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="50000,200000", help="record counts, comma-separated")
    p.add_argument("--factory", default="IVF1024,Flat")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    scifact = Path(os.environ.get("RAG_DATASETS", REPO_ROOT.parent / "shared" / "datasets")) / "beir-scifact"
    passages = _passages(scifact)
    started = dt.datetime.now(dt.timezone.utc)
    rows = ["| records | run | seconds | docs/s | embedded | peak RSS MB | index MB |",
            "|---:|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            index = Path(tmp) / f"index-{n}"
            for label in ("first", "same input again"):
                r = _run(index, passages, n, args.factory)
                row = (f"| {n:,} | {label} | {r['seconds']:.0f} | {r['docs_per_s']:.0f} | {r['embedded']:,} | "
                       f"{r['peak_rss_mb']:,.0f} | {r['index_mb']:,.0f} |")
                print(row, flush=True)
                rows.append(row)
                if r["rc"] != 0:
                    print(f"rag index exited {r['rc']}", file=sys.stderr)
    text = "\n".join(rows)
    print(text)
    if not args.no_record:
        sizes = "" if args.sizes == "50000,200000" else f" --sizes {args.sizes}"
        append_section(f"Streaming scale, {args.factory}", started, [
            f"Machine: {machine()}, GPU: none; {len(passages):,} 40-word SciFact passages cycled with distinct ids and "
            "suffixes, one chunk per record, piped to `rag index --jsonl -`",
            f"Reproduce: `python3 benchmarks/scale_bench.py{sizes}`"], text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
