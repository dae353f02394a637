#!/usr/bin/env python3
"""A 10,000-object bucket as a source (issue 34): the first run (list, fetch, read, embed), an
unchanged re-run (list only: nothing fetched), and a re-run after 1% of the objects changed, in
one run, against a real S3 server on 127.0.0.1 (moto in server mode; a real store adds network
time per request, so the fetch figures are a floor).

    python3 benchmarks/sources_bench.py                  # 10,000 objects, appends a record
    python3 benchmarks/sources_bench.py --objects 500 --no-record
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import boto3
from benchmark_record import append_section, cpu_flags, machine
from moto.server import ThreadedMotoServer

from rag import Engine, Settings
from rag.sources.settings import SourceSettings

BUCKET = "bench"
TOPICS = ["leave", "travel", "expenses", "security", "parking", "printers", "payroll", "training", "laptops", "visas"]


def _text(i: int, edit: int = 0) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (f"# {topic.title()} note {i}\n\nNote {i} on {topic}: the reference code is {topic[:2].upper()}-{i}-{edit}. "
            f"It applies to office {i % 37} and team {i % 53}, reviewed each quarter by the {topic} owners.")


def _fill(client, count: int, edit: int = 0, every: int = 1) -> None:
    for i in range(0, count, every):
        client.put_object(Bucket=BUCKET, Key=f"docs/{i // 1000:02d}/note-{i:05d}.md", Body=_text(i, edit).encode())


def _timed(engine: Engine, declared: SourceSettings) -> tuple[float, object]:
    started = time.perf_counter()
    run = engine.index_source(declared)
    return time.perf_counter() - started, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    started_at = dt.datetime.now(dt.timezone.utc)
    print(f"Machine: {machine()}\nflags: {' '.join(cpu_flags())}", flush=True)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(BENCH_KEY="testing", BENCH_SECRET="testing")
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    _fill(client, args.objects)
    declared = SourceSettings(name="bench", url=f"s3://{BUCKET}/docs", endpoint=endpoint, region="us-east-1",
                              credentials={"key": "BENCH_KEY", "secret": "BENCH_SECRET"})
    rows = []
    with tempfile.TemporaryDirectory(prefix="rag-sources-bench-") as folder:
        engine = Engine(Settings.load(overrides={"index.path": str(Path(folder) / "index")}, environ={}))
        engine.embedder.warm_up()
        for label, prepare in (("first run", None), ("unchanged re-run", None),
                               ("1% changed", lambda: _fill(client, args.objects, edit=1, every=100))):
            if prepare:
                prepare()
            seconds, run = _timed(engine, declared)
            report = run.report
            rows.append((label, seconds, run.listed, run.fetched, report.added, report.updated, report.unchanged))
            print(f"{label}: {seconds:.1f} s, {run.listed:,} listed, {run.fetched:,} fetched, {report.added:,} added, "
                  f"{report.updated:,} updated, {report.unchanged:,} unchanged: {run.listed / seconds:,.0f} objects/s",
                  flush=True)
    server.stop()
    table = "| run | seconds | objects listed | fetched | added | updated | unchanged | objects/s |\n" \
            "|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(
                f"| {label} | {s:.1f} | {listed:,} | {fetched:,} | {added:,} | {updated:,} | {unchanged:,} | "
                f"{listed / s:,.0f} |" for label, s, listed, fetched, added, updated, unchanged in rows)
    print(table)
    if not args.no_record:
        append_section(f"Sources: a {args.objects:,}-object S3 bucket, first run and re-runs", started_at, [
            f"Machine: {machine()}, GPU: none",
            f"CPU flags (`grep -m1 flags /proc/cpuinfo`): {' '.join(cpu_flags())}",
            f"{args.objects:,} Markdown objects of about 40 words in a bucket of a real S3 server on 127.0.0.1 (moto "
            "in server mode), read through `Engine.index_source` (s3fs); defaults otherwise; objects/s counts "
            "objects listed per second of the whole run (model already loaded)",
            "Reproduce: `python3 benchmarks/sources_bench.py`"], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
