#!/usr/bin/env python3
"""One query at a time against one segment's FAISS index, whole and split into shards
(`index.shards`), side by side: does a query use more cores, and are the hits the same?

Synthetic unit vectors (384 dimensions, as all-MiniLM-L6-v2's), 0.1% of them deleted and skipped
inside the search as a reader skips them: what is measured is the scan, not the embedding.
Queries alternate between the whole index and each split, in turn.

    python3 benchmarks/shard_bench.py [--vectors 400000] [--shards 2,4] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

import numpy as np

from benchmark_record import append_section, machine
from rag.evaluate.metrics import percentile
from rag.index.shards import ShardedIndex, split
from rag.index.vectors import VectorIndex

import rag.index.shards as shards_module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=400_000)
    parser.add_argument("--shards", default="2,4")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.vectors, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(args.vectors, dtype=np.int64) * 3 + 7
    queries = vectors[rng.choice(args.vectors, args.queries, replace=False)] + 0.01
    # As a reader searches: with the segment's deleted ids (0.1% here) skipped inside the search.
    deleted = np.sort(rng.choice(ids, args.vectors // 1000, replace=False))
    rows = ["| index | shards | p50 ms | p95 ms | vs whole | same top 100 |", "|---|---:|---:|---:|---:|---|"]
    shards_module.MIN_SHARD_VECTORS = 1
    for factory, nprobe in (("Flat", 1), ("IVF1024,Flat", 64)):
        whole = VectorIndex.create(factory, 384, use_gpu=False)
        if not whole.is_trained:
            whole.train(vectors[:65_536])
        whole.add(vectors, ids)
        indexes: dict[int, VectorIndex | ShardedIndex] = {1: whole}
        for n in (int(s) for s in args.shards.split(",") if s):
            indexes[n] = split(whole, n)
        spent: dict[int, list[float]] = {n: [] for n in indexes}
        found: dict[int, list[np.ndarray]] = {n: [] for n in indexes}
        for query in queries:
            for n, index in indexes.items():
                begun = time.perf_counter()
                _, hits = index.search(query[None, :], 100, nprobe, 64, None, deleted)
                spent[n].append(time.perf_counter() - begun)
                found[n].append(np.sort(hits[0]))
        base = percentile(spent[1], 50)
        for n in indexes:
            same = all(np.array_equal(a, b) for a, b in zip(found[n], found[1]))
            rows.append(f"| {factory} | {n} | {1000 * percentile(spent[n], 50):.2f} | "
                        f"{1000 * percentile(spent[n], 95):.2f} | {base / percentile(spent[n], 50):.2f}x | "
                        f"{'yes' if same else 'NO'} |")
            print(rows[-1], flush=True)
    body = "\n".join(rows) + (f"\n\n{args.vectors:,} unit vectors, {args.queries} queries one at a time, k=100; "
                              f"IVF with nprobe 64. {os.cpu_count()} cores.")
    if not args.no_record:
        append_section(f"One query over a segment split into shards ({args.vectors:,} vectors)", started, [
            f"Machine: {machine()}; synthetic 384-dimensional vectors",
            "Reproduce: `python3 benchmarks/shard_bench.py`"], body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
