#!/usr/bin/env python3
"""An IVF segment's inverted lists in memory and on disk (`index.ondisk_bytes`), side by side:
what merging costs each way, what a reader's process holds in memory, and how fast one query is.

Four IVF segments of synthetic unit vectors (384 dimensions, as all-MiniLM-L6-v2's; 0.1% deleted)
are merged into one, once in memory and once into vectors.ivfdata. Each merged segment is then
opened by a fresh process that reports its memory (anonymous: the process's own; file-backed:
mapped pages the kernel may drop again) and times queries one at a time, the two processes in
turn, twice each. The hits must be the same.

    python3 benchmarks/ondisk_bench.py [--vectors 400000] [--factory IVF1024,Flat] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmark_record import append_section, machine
from rag.evaluate.metrics import percentile
from rag.index.vectors import ON_DISK_FILE, VECTORS_FILE, VectorIndex

DIMENSION = 384


def _memory() -> dict[str, float]:
    """This process's resident memory in MiB: its own (anonymous) and mapped from files."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def _reader(args: argparse.Namespace) -> int:
    """In a fresh process: open one merged segment, report memory, time queries."""
    data = np.load(args.data)
    queries, deleted = data["queries"], data["deleted"]
    before = _memory()
    begun = time.perf_counter()
    index = VectorIndex.load(Path(args.read) / VECTORS_FILE, args.factory, use_gpu=False)
    opened = time.perf_counter() - begun
    loaded = _memory()
    spent, found = [], []
    for query in queries:
        begun = time.perf_counter()
        _, hits = index.search(query[None, :], 100, args.nprobe, 64, None, deleted)
        spent.append(time.perf_counter() - begun)
        found.append(np.sort(hits[0]).tolist())
    searched = _memory()
    print(json.dumps({"open_s": opened, "on_disk": index.on_disk, "before": before, "loaded": loaded,
                      "searched": searched, "spent": spent, "found": found}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=400_000)
    parser.add_argument("--factory", default="IVF1024,Flat")
    parser.add_argument("--nprobe", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--read", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        return _reader(args)
    started = dt.datetime.now(dt.timezone.utc)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.vectors, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(args.vectors, dtype=np.int64) * 3 + 7
    queries = vectors[rng.choice(args.vectors, args.queries, replace=False)] + 0.01
    deleted = np.sort(rng.choice(ids, args.vectors // 1000, replace=False))
    live = np.setdiff1d(ids, deleted)

    with tempfile.TemporaryDirectory(prefix="ondisk-bench-") as work:
        root = Path(work)
        np.savez(root / "data.npz", queries=queries, deleted=np.zeros(0, np.int64))
        trained = VectorIndex.create(args.factory, DIMENSION, use_gpu=False)
        trained.train(vectors[:65_536])
        template = trained.empty_copy()
        parts = []
        for n, chunk in enumerate(np.array_split(np.arange(args.vectors), 4)):
            part = template.empty_copy()
            part.add(vectors[chunk], ids[chunk])
            folder = root / f"s{n}"
            folder.mkdir()
            part.save(folder / VECTORS_FILE)
            parts.append(folder)
        del vectors

        merged: dict[str, Path] = {}
        merge_seconds: dict[str, float] = {}
        for where in ("memory", "disk"):
            sources = [VectorIndex.load(folder / VECTORS_FILE, args.factory, use_gpu=False) for folder in parts]
            target = root / f"merged-{where}"
            target.mkdir()
            begun = time.perf_counter()
            index = template.empty_copy()
            index.absorb(sources, live, target / ON_DISK_FILE if where == "disk" else None)
            index.save(target / VECTORS_FILE)
            merge_seconds[where] = time.perf_counter() - begun
            assert index.ntotal == len(live)
            merged[where] = target
            del sources, index
        list_bytes = (merged["disk"] / ON_DISK_FILE).stat().st_size

        runs: dict[str, list[dict]] = {"memory": [], "disk": []}
        for _ in range(2):
            for where in ("memory", "disk"):
                out = subprocess.run([sys.executable, __file__, "--read", str(merged[where]), "--data",
                                      str(root / "data.npz"), "--factory", args.factory, "--nprobe",
                                      str(args.nprobe)], capture_output=True, text=True, check=True)
                runs[where].append(json.loads(out.stdout.strip().splitlines()[-1]))

    same = all(a["found"] == b["found"] for a, b in zip(runs["memory"], runs["disk"]))
    rows = ["| lists | merge s | open s | own memory after open MiB | mapped MiB after queries | "
            "p50 ms (run 1) | p50 ms (run 2) | p95 ms (run 2) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for where in ("memory", "disk"):
        first, second = runs[where]
        own = second["loaded"]["RssAnon"] - second["before"]["RssAnon"]
        mapped = second["searched"]["RssFile"] - second["before"]["RssFile"]
        rows.append(f"| {where} | {merge_seconds[where]:.2f} | {second['open_s']:.2f} | {own:.0f} | {mapped:.0f} | "
                    f"{1000 * percentile(first['spent'], 50):.2f} | {1000 * percentile(second['spent'], 50):.2f} | "
                    f"{1000 * percentile(second['spent'], 95):.2f} |")
        print(rows[-1], flush=True)
    print(f"same top 100 for every query: {'yes' if same else 'NO'}")
    body = "\n".join(rows) + (
        f"\n\n{args.factory}, {args.vectors:,} unit vectors in four segments, 0.1% deleted, merged into one "
        f"({list_bytes / 2**20:.0f} MiB of lists); {args.queries} queries one at a time, k=100, nprobe "
        f"{args.nprobe}; each reader a fresh process, memory then disk, twice. Own memory: the reader's "
        "anonymous resident memory grown by opening the index; mapped: file pages resident after the "
        f"queries, which the kernel may drop again. Same top 100 for every query: {'yes' if same else 'NO'}. "
        f"{os.cpu_count()} cores.")
    if not args.no_record:
        append_section(f"IVF lists in memory and on disk ({args.vectors:,} vectors)", started, [
            f"Machine: {machine()}; synthetic 384-dimensional vectors",
            "Reproduce: `python3 benchmarks/ondisk_bench.py`"], body)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
