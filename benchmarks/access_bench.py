#!/usr/bin/env python3
"""Cost of per-person access lists (issue 33): warm search latency with a person's access on an
index of N one-chunk documents, where the person may read 1% of them and where they may read
100%, beside the same searches without access, in one run.

The corpus is scale_bench.py's: SciFact abstracts cut into 40-word passages, cycled with a distinct
id and suffix, one chunk per record, piped to `rag index --jsonl -` (rag's defaults otherwise:
index.factory "Flat", hybrid search). Each record carries an access list naming one of 100
groups: record i belongs to group g{i % 100 + 1}, so g1 holds 1% of the documents, spread over the
whole index. The "1%" person is in g1; the "100%" person is in all 100 groups. The questions are
SciFact test queries, asked one at a time (k=10) after a warm-up, the three cases taking turns per
question; each search embeds its question (the embedder's cache of recent questions is emptied
first), so the three differ only in the filter. Every access search must return k hits, all of
them readable by the person. Each stage's p50 is printed beside the totals (filter: finding the
chunk ids a person may read; search: FAISS; bm25; fetch: the hits' rows).

--analyze runs SQLite's ANALYZE on the index's databases before searching (rag does not): a
diagnostic, not rag as shipped. Up to 4c03ab9 a person's access was a SQL filter, and without
statistics SQLite joined chunks to documents by `collection` alone (the join's `doc_id = ... OR
content_of = ...` keeps it off the key), visiting chunks x documents rows: 1.8 s per search at
2,500 chunks, 36-39 s at 10,000 (2026-12-07). Since 594c846 access comes from an in-memory map
per index version, and since 95010c5 every filter joins in two keyed arms (no ANALYZE needed).

    python3 benchmarks/access_bench.py                              # 100,000 chunks (~15 min), appends a record
    python3 benchmarks/access_bench.py --chunks 5000 --no-record    # a quick check of the script (~1 min)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
from benchmark_record import PEAK_MEMORY, append_section, machine
from scale_bench import _passages, _records

from rag import Engine, Settings
from rag.evaluate.metrics import percentile
from rag.filters import Access

REPO_ROOT = Path(__file__).resolve().parent.parent
GROUPS = 100  # record i is readable by group g{i % GROUPS + 1}: g1 reads 1%
STAGES = ("filter", "embed", "search", "bm25", "fuse", "fetch", "total")
PEOPLE: dict[str, Access | None] = {
    "no access (baseline)": None,
    "access, reads 1%": Access("reader-1pct", ("g1",)),
    "access, reads 100%": Access("reader-all", tuple(f"g{g}" for g in range(1, GROUPS + 1))),
}


def _group(record: int) -> str:
    return f"g{record % GROUPS + 1}"


def _acl_records(passages: list[str], n: int) -> Iterator[bytes]:
    """scale_bench's records, each with a top-level access list naming its one group."""
    for i, line in enumerate(_records(passages, n)):
        record = json.loads(line)
        record["acl"] = {"groups": [_group(i)]}
        yield (json.dumps(record) + "\n").encode()


def _build(index: Path, passages: list[str], n: int, factory: str) -> dict[str, Any]:
    """`rag index --jsonl -` as the command line runs it, its own peak memory written as it exits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    peak_file = index.parent / "peak-kb"
    launcher = PEAK_MEMORY + (
        "import atexit, runpy, sys\npeak = sys.argv[1]\n"
        "atexit.register(lambda: open(peak, 'w').write(str(peak_kb())))\n"
        "sys.argv = ['rag', 'index', '--jsonl', '-', '--json', '--index', sys.argv[2], '--factory', sys.argv[3]]\n"
        "runpy.run_module('rag', run_name='__main__')\n")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", launcher, str(peak_file), str(index), factory],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO_ROOT)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    for record in _acl_records(passages, n):
        proc.stdin.write(record)
    proc.stdin.close()
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"rag index exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    report = json.loads(out)
    size = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
    return {"seconds": seconds, "chunks": report["chunks"], "peak_mb": int(peak_file.read_text()) / 1024,
            "index_mb": size / 2**20}


def _analyze(index: Path) -> None:
    """SQLite's statistics for the planner, in every database of the index (--analyze)."""
    for database in sorted(index.rglob("*.sqlite")):
        conn = sqlite3.connect(database)
        try:
            conn.execute("ANALYZE")
            conn.commit()
        finally:
            conn.close()


def _forget_questions(engine: Engine) -> None:
    """Empty the embedder's cache of recent question vectors, so that every timed search embeds."""
    embedder = engine.embedder
    recent = getattr(embedder, "_recent_queries", None)
    if recent is not None:
        with embedder._recent_lock:
            recent.clear()


def _questions(scifact: Path, count: int) -> list[str]:
    """The first `count` SciFact test queries (file order), then other queries if there are fewer."""
    texts = {}
    with (scifact / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            query = json.loads(line)
            texts[query["_id"]] = query["text"]
    test = list(dict.fromkeys(line.split("\t")[0] for line in
                              (scifact / "qrels" / "test.tsv").read_text().splitlines()[1:] if line.strip()))
    ordered = test + [qid for qid in texts if qid not in set(test)]
    return [texts[qid] for qid in ordered if qid in texts][:count]


def _readable(access: Access | None, doc_id: str) -> bool:
    return access is None or _group(int(doc_id.removeprefix("r"))) in access.groups


def _first_searches(engine: Engine, question: str, k: int, mode: str) -> str:
    """The first search without access (the models load), then each person's first: what a
    version's first search with access costs beyond a warm one (anything read once per version)."""
    engine.search_many([question], k, mode=mode)
    spent = []
    for name, access in PEOPLE.items():
        if access is not None:
            _forget_questions(engine)
            started = time.perf_counter()
            engine.search_many([question], k, mode=mode, access=access)
            spent.append(f"{name} {1000 * (time.perf_counter() - started):,.1f} ms")
    return "first search on the opened index, after one without access: " + ", ".join(spent)


def _measure(engine: Engine, questions: list[str], k: int, mode: str, warm_up: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per stage of each search, per person; the people take turns on every question
    (in a rotating order), so that a slower minute of the machine falls on all of them."""
    people = list(PEOPLE.items())
    for question in questions[:warm_up]:
        for _, access in people:
            engine.search_many([question], k, mode=mode, access=access)
    spent: dict[str, dict[str, list[float]]] = {name: {s: [] for s in STAGES} for name in PEOPLE}
    counts: dict[str, list[int]] = {name: [] for name in PEOPLE}
    for turn, question in enumerate(questions):
        for name, access in people[turn % len(people):] + people[:turn % len(people)]:
            _forget_questions(engine)
            stages: dict[str, float] = {}
            started = time.perf_counter()
            hits = engine.search_many([question], k, mode=mode, timings=stages, access=access)[0]
            stages["total"] = time.perf_counter() - started
            for stage in STAGES:
                spent[name][stage].append(stages.get(stage, 0.0))
            counts[name].append(len(hits))
            unreadable = [h.doc_id for h in hits if not _readable(access, h.doc_id)]
            assert not unreadable, f"{name}: {question!r} returned documents it may not read: {unreadable}"
        if (turn + 1) % 50 == 0 or turn + 1 == len(questions):
            print(f"  {turn + 1}/{len(questions)} questions, p50 so far: " + ", ".join(
                f"{name} {1000 * percentile(spent[name]['total'], 50):.1f} ms" for name in PEOPLE), flush=True)
    for name, got in counts.items():
        short = sum(1 for c in got if c < k)
        print(f"{name}: {len(got)} searches, {len(got) - short} returned k={k} hits, {short} fewer "
              f"(min {min(got)}, max {max(got)})", flush=True)
        assert short == 0, f"{name}: {short} of {len(got)} searches returned fewer than k={k} hits"
    return spent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=100_000, help="records in the index, one chunk each")
    p.add_argument("--queries", type=int, default=200, help="questions timed per person")
    p.add_argument("--warm-up", type=int, default=10, help="questions asked first, untimed")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--mode", default="hybrid", choices=("hybrid", "dense", "bm25"))
    p.add_argument("--factory", default="Flat", help="index.factory (rag's default: Flat)")
    p.add_argument("--analyze", action="store_true",
                   help="run SQLite's ANALYZE on the index before searching (a diagnostic: rag does not)")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    if args.chunks < GROUPS * args.k:
        p.error(f"--chunks must be at least {GROUPS * args.k} so that the 1% person can read k documents")
    scifact = Path(os.environ.get("RAG_DATASETS", REPO_ROOT.parent / "shared" / "datasets")) / "beir-scifact"
    passages = _passages(scifact)
    questions = _questions(scifact, args.queries)
    started = dt.datetime.now(dt.timezone.utc)
    flags = subprocess.run(["grep", "-m1", "flags", "/proc/cpuinfo"], capture_output=True, text=True).stdout.strip()
    print(f"Machine: {machine()}\n{flags}", flush=True)
    with tempfile.TemporaryDirectory(prefix="access-bench-") as tmp:
        index = Path(tmp) / "index"
        built = _build(index, passages, args.chunks, args.factory)
        build_line = (f"Index: {args.chunks:,} records, {built['chunks']:,} chunks, built in {built['seconds']:.0f} s "
                      f"({args.chunks / built['seconds']:.0f} docs/s), `rag index` peak RSS {built['peak_mb']:,.0f} MB, "
                      f"{built['index_mb']:,.0f} MB on disk, index.factory {args.factory}")
        print(build_line, flush=True)
        if args.analyze:
            _analyze(index)
            build_line += "; then SQLite's ANALYZE run on its databases by this benchmark (--analyze; rag does not)"
        settings = Settings.load(overrides={"index.path": str(index), "index.factory": args.factory})
        engine = Engine(settings)
        first = _first_searches(engine, questions[0], args.k, args.mode)
        print(first, flush=True)
        spent = _measure(engine, questions, args.k, args.mode, args.warm_up)
        rss_mb = psutil.Process().memory_info().rss / 2**20
        engine.close()
    readable = {"no access (baseline)": "all (no filter)", "access, reads 1%": f"{len(range(0, args.chunks, GROUPS)):,}",
                "access, reads 100%": f"{args.chunks:,}"}
    rows = ["| person | readable documents | search p50 ms | p95 ms | hits = k | "
            + " | ".join(f"{s} p50" for s in STAGES[:-1]) + " |",
            "|---|---:|---:|---:|---|" + "---:|" * (len(STAGES) - 1)]
    for name, stages in spent.items():
        total = stages["total"]
        rows.append(f"| {name} | {readable[name]} | {1000 * percentile(total, 50):.1f} | {1000 * percentile(total, 95):.1f} "
                    f"| {len(total)}/{len(total)} | "
                    + " | ".join(f"{1000 * percentile(stages[s], 50):.2f}" for s in STAGES[:-1]) + " |")
    table = "\n".join(rows)
    settings_line = (f"{args.mode} search, k={args.k}, {len(questions)} SciFact test queries one at a time after "
                     f"{args.warm_up} warm-up ones, the three cases taking turns per query; stage columns in ms; "
                     f"search process RSS after the runs {rss_mb:,.0f} MB; {first}")
    print(f"{settings_line}\n\n{table}", flush=True)
    if not args.no_record:
        options = "" if args.chunks == 100_000 else f" --chunks {args.chunks}"
        options += "" if args.mode == "hybrid" else f" --mode {args.mode}"
        options += "" if args.factory == "Flat" else f" --factory {args.factory}"
        options += " --analyze" if args.analyze else ""
        title = f"Access lists: search cost, {args.chunks:,} chunks" + (", after ANALYZE (--analyze)" if args.analyze else "")
        append_section(title, started, [
            f"Machine: {machine()}, GPU: none",
            f"CPU flags (`grep -m1 flags /proc/cpuinfo`): {flags.split(':', 1)[-1].strip()}",
            f"{len(passages):,} 40-word SciFact passages cycled as in scale_bench.py, one chunk per record, each "
            f"record's `acl` naming one of {GROUPS} groups (record i: g{{i % {GROUPS} + 1}}); the 1% person is in "
            f"g1, the 100% person in all {GROUPS} groups",
            build_line,
            settings_line,
            f"Reproduce: `python3 benchmarks/access_bench.py{options}`"], table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
