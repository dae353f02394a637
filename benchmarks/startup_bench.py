#!/usr/bin/env python3
"""Start-up: how long a user waits for `rag --help`, `rag config`, a fresh `rag search` and the
server's /readyz, each a new process timed by wall clock as a user runs it.

Targets: `rag --help` <= 0.2 s, `rag config` <= 0.3 s, `rag search` in a fresh process <= 2 s,
the server ready <= 10 s with the embedded generator's cache present. The search and the server
are timed on the default embedding backend and on torch (the backend before ONNX), side by side.
The sample corpus is indexed beforehand and the model caches are warm, so that neither indexing
nor the one-time preparation (benchmarks/first_answer_bench.py) is counted.

    python3 benchmarks/startup_bench.py [--runs 5] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmark_record import RECORD_FILE, append_section, machine
from rag import Engine, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
QUESTION = "How many days of annual leave do employees in Lisbon get?"
TARGETS = {"rag --help": 0.2, "rag config": 0.3, "rag search (fresh process)": 2.0, "server ready (/readyz)": 10.0}


def _environ(index: Path, backend: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return environ | {"RAG_INDEX_PATH": str(index), "RAG_EMBEDDING_BACKEND": backend}


def timed(command: list[str], environ: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rag", *command], env=environ, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_MEMORY: dict[str, float] = {}  # backend -> resident MB after /readyz and one answer


def _answer_and_measure(port: int, pid: int, backend: str) -> None:
    """One real question through the server, then its resident memory (the process and children)."""
    import json

    import psutil

    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/ask", data=json.dumps({"question": QUESTION}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
    process = psutil.Process(pid)
    rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
    SERVER_MEMORY[backend] = max(SERVER_MEMORY.get(backend, 0.0), rss / 2**20)


def server_ready(environ: dict[str, str]) -> float:
    """Seconds from `rag serve` starting to /readyz answering 200 (models and index loaded)."""
    port = _free_port()
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "rag", "serve", "--port", str(port)], env=environ,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < 120:
            if server.poll() is not None:
                raise RuntimeError(f"rag serve exited with {server.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        ready = time.perf_counter() - started
                        _answer_and_measure(port, server.pid, environ["RAG_EMBEDDING_BACKEND"])
                        return ready
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rag serve was not ready within 120 s")
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5, help="processes timed per row (the median is reported)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RECORD_FILE.relative_to(REPO_ROOT)}")
    args = p.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    rows = ["| start-up | backend | median s | min s | max s | target s |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        index = Path(tmp) / "index"
        engine = Engine(Settings.load(overrides={"index.path": str(index)}, environ={}))
        engine.index([REPO_ROOT / "corpora"])
        engine.ask(QUESTION)  # prepares the generator's cache (if a first run has not) before timing
        default_backend = engine.embedder.backend
        engine.close()
        cases = [("rag --help", "-", lambda env: timed(["--help"], env)),
                 ("rag config", "-", lambda env: timed(["config"], env))]
        for backend in (default_backend, "torch"):
            cases += [("rag search (fresh process)", backend, lambda env: timed(["search", QUESTION], env)),
                      ("server ready (/readyz)", backend, server_ready)]
        for name, backend, run in cases:
            environ = _environ(index, default_backend if backend == "-" else backend)
            run(environ)  # one untimed run: the page cache holds the files after it
            seconds = [run(environ) for _ in range(args.runs)]
            rows.append(f"| {name} | {backend} | {statistics.median(seconds):.2f} | {min(seconds):.2f} | "
                        f"{max(seconds):.2f} | {TARGETS[name]:g} |")
            print(rows[-1], flush=True)
    text = "\n".join(rows) + "\n\nThe server's resident memory after /readyz and one answered question (default " \
        "models: the embedding model and the local generator): " + \
        ", ".join(f"{backend} {mb:,.0f} MB" for backend, mb in SERVER_MEMORY.items())
    print(text)
    if not args.no_record:
        append_section("Start-up", started,
                       [f"Machine: {machine()}", f"Median of {args.runs} new processes per row, after one untimed "
                        "run; sample corpus indexed beforehand, model caches warm; the server with the default "
                        "generator (loaded before /readyz answers)",
                        "Reproduce: `python3 benchmarks/startup_bench.py`"], text)


if __name__ == "__main__":
    main()
