#!/usr/bin/env python3
"""`rag index FOLDER --watch` (issue 34): how long from a file written to its text searchable.

For each folder size, the folder is indexed first, then watched (rag.indexing.watch, the CLI's
debounce) on its own thread while this thread writes new files and searches for each one's
distinctive code word (BM25, every 20 ms) until its document comes back:
  - one at a time: 20 files, each written once the previous one is searchable, after a pause;
  - a burst: 20 files written together, each timed from its own write.
Each batch is a whole `--sync` run over the folder (unchanged files are read and hashed, not
embedded), so the latency grows with the folder; searching every 20 ms shares the CPU with the
run. Target (issue 34): a new file searchable within 10 s, p95 over 20 files.

    python3 benchmarks/watch_bench.py                        # folders of 100 and 1,000 files, recorded
    python3 benchmarks/watch_bench.py --sizes 100 --no-record
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmark_record import append_section, cpu_flags, machine

from rag import Engine, Settings
from rag.evaluate.metrics import percentile
from rag.indexing.watch import MAX_WAIT_FACTOR, Batch, Watching, watch

FILES = 20
DEBOUNCE = 0.5  # the CLI's (rag.indexing.watch.watch's default)
TOPICS = ["leave", "travel", "expenses", "security", "parking", "printers", "payroll", "training", "laptops", "visas"]


def _note(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (f"# {topic.title()} note {i}\n\nNote {i} on {topic}: it applies to office {i % 37} and team {i % 53}, "
            f"reviewed each quarter by the {topic} owners.\n")


def _new(i: int) -> tuple[str, str]:
    """(file name, text with a code word found nowhere else)."""
    word = f"zq{i:03d}watchword"
    return f"new-{i:03d}.md", f"# New memo {i}\n\nThe memo {word} was written while the folder was watched.\n"


def _searchable(engine: Engine, i: int) -> bool:
    name, _ = _new(i)
    return any(hit.doc_id == name for hit in engine.search(f"zq{i:03d}watchword", k=3, mode="bm25"))


def _wait(engine: Engine, pending: dict[int, float], latencies: list[float], limit: float = 60.0) -> None:
    """Poll until every pending file is searchable; each one's latency from its own write."""
    deadline = time.monotonic() + limit
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"not searchable after {limit:g} s: {sorted(pending)}")
        for i in list(pending):
            if _searchable(engine, i):
                latencies.append(time.monotonic() - pending.pop(i))
        time.sleep(0.02)


def measure(size: int, work: Path) -> dict[str, Any]:
    folder, events = work / f"docs-{size}", []
    folder.mkdir()
    for i in range(size):
        (folder / f"note-{i:05d}.md").write_text(_note(i), encoding="utf-8")
    engine = Engine(Settings.load(overrides={"index.path": str(work / f"index-{size}")}))
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(engine, [folder], events.append, stop, DEBOUNCE),
                              kwargs={"first": lambda: engine.index([folder], sync=True)}, daemon=True)
    started = time.perf_counter()
    thread.start()
    while not any(isinstance(e, Watching) for e in events):
        time.sleep(0.05)
    first = time.perf_counter() - started
    engine.search("warm up the reader", k=1, mode="bm25")
    one: list[float] = []
    for i in range(FILES):
        time.sleep(0.3 + (i % 4) * 0.2)  # apart, so each is a batch of its own
        name, text = _new(i)
        (folder / name).write_text(text, encoding="utf-8")
        _wait(engine, {i: time.monotonic()}, one)
        print(f"  {size} files, one at a time: #{i} {one[-1]:.2f} s", file=sys.stderr, flush=True)
    time.sleep(2)  # the last batch is reported once its run returns, a moment after it is searchable
    single_runs = [e for e in events if isinstance(e, Batch) and not e.first]
    burst: list[float] = []
    pending: dict[int, float] = {}
    for i in range(FILES, 2 * FILES):
        name, text = _new(i)
        (folder / name).write_text(text, encoding="utf-8")
        pending[i] = time.monotonic()
    _wait(engine, pending, burst)
    time.sleep(DEBOUNCE * 4)
    stop.set()
    thread.join()
    batches = [e for e in events if isinstance(e, Batch) and not e.first]
    burst_runs = batches[len(single_runs):]
    for b in burst_runs:
        print(f"  burst run: {b.describe()} ({b.report and b.report.added} added)", file=sys.stderr)
    return {"size": size, "first": first, "one": one, "one_runs": len(single_runs), "burst": burst,
            "burst_runs": len(burst_runs),
            "run_seconds": percentile([b.report.seconds for b in single_runs if b.report], 50)}


def _row(size: int, what: str, latencies: list[float], runs: str, run_seconds: str) -> str:
    return (f"| {size:,} | {what} | {percentile(latencies, 50):.2f} | {percentile(latencies, 95):.2f} | "
            f"{max(latencies):.2f} | {runs} | {run_seconds} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000", help="folder sizes (files already indexed), comma-separated")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    started_at = dt.datetime.now(dt.timezone.utc)
    print(f"Machine: {machine()}", flush=True)
    rows, firsts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in args.sizes.split(",") if s]:
            m = measure(size, Path(tmp))
            firsts.append(f"{size:,} files {m['first']:.1f} s")
            rows.append(_row(size, f"{FILES} files one at a time", m["one"], str(m["one_runs"]), f"{m['run_seconds']:.2f}"))
            rows.append(_row(size, f"{FILES} files in a burst", m["burst"], str(m["burst_runs"]), ""))
    body = ("| files in the folder | new files | written → searchable p50 s | p95 s | max s | runs | "
            "run p50 s |\n|---:|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    print(body)
    if not args.no_record:
        command = "python3 benchmarks/watch_bench.py" + (f" --sizes {args.sizes}" if args.sizes != "100,1000" else "")
        append_section("Watched folder: a new file written → searchable", started_at, [
            f"Machine: {machine()}, GPU: none",
            f"CPU flags (`grep -m1 flags /proc/cpuinfo`, those the embedder's speed depends on): "
            f"{' '.join(cpu_flags()) or 'none of them'}",
            f"rag defaults (config.toml); the watch's debounce {DEBOUNCE:g} s (the CLI's): a batch runs after "
            f"{DEBOUNCE:g} s without a new change, at most {DEBOUNCE * MAX_WAIT_FACTOR:g} s after its first; "
            "each file one short Markdown memo; searched with BM25 every 20 ms from another thread until its "
            f"document is returned; first run (indexing the folder): {', '.join(firsts)}",
            f"Reproduce: `{command}`",
        ], body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
