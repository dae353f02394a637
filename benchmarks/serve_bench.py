#!/usr/bin/env python3
"""Serving benchmark: `rag serve` under concurrent clients against in-process `Engine.search`.

The first N BEIR SciFact abstracts (all 5,183 by default) are indexed once into
indexes/bench-serve/ (ignored by git; reused while its marker matches) and the 1,109 SciFact
claims are the questions. In one run, never overlapping:

1. in process, one caller: `Engine.search` in a loop, then `Engine.search_many` in batches of
   16 (what the server's micro-batching can at best achieve), each for --seconds;
2. `python -m rag serve` on a free port of 127.0.0.1 with a fresh read key (so every request
   pays for its key check, as in production), and --clients concurrent clients (asyncio, one
   shared httpx.AsyncClient) each sending the next question as soon as its last one is
   answered, for --seconds: first POST /v1/search, then POST /v1/ask with the extractive
   generator.

Figures per phase: requests, successful requests/s (over the time until the last request in
flight is answered), p50/p95/p99 latency of the successful ones, errors (any non-200 or
exception; the first few are printed with the server's log lines that are not plain access
lines), and the CPU used meanwhile by the server, by this process (the load generator, or the
engine in the in-process rows), by the machine's other processes and stolen by its host (a
virtual machine's CPU given to other machines), in % of one core. The load
generator shares the machine with the server, so on a small machine it takes CPU the server
would otherwise have; the CPU columns show how much. A client answered 503 (more waiting
requests than serve.queue_depth, 64, which the default 50 clients stay under) waits for its
Retry-After before it sends again.

Targets (from the issue): zero errors; HTTP search throughput at least 80% of the in-process
`Engine.search` rate. The exit status is 1 when a target is missed.

Both sides use rag's default settings (RAG_* variables and RAG_CONFIG of the caller are
ignored), k=5 and hybrid search. Data is read from ../shared/datasets (or $RAG_DATASETS) and
never copied into the repository. Unless --no-record, the table is appended to
docs/benchmarks.md with the machine and the command that reproduces it.

    python3 benchmarks/serve_bench.py                                   # 50 clients, 60 s per phase
    python3 benchmarks/serve_bench.py --seconds 8 --clients 20 --documents 1000 --no-record
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from benchmark_record import append_section, machine

from rag import Engine, Settings
from rag.errors import RagError
from rag.serve.keys import KeyStore

REPO_ROOT = Path(__file__).resolve().parent.parent

BENCH_INDEXES = REPO_ROOT / "indexes" / "bench-serve"  # /indexes/* is ignored by git
SCIFACT_FIELDS = {"ingest.json_id_field": "_id", "ingest.json_text_field": "text", "ingest.json_title_field": "title"}
BATCH = 16  # search_many's batch: serve.batch_size, the most the server puts in one model call
WARMUP = 5  # untimed requests per phase: model loads, first-call allocations, the answerer
ERRORS_SHOWN = 5
LOG_LINES_SHOWN = 20
TARGET_RATIO = 0.8
READY_TIMEOUT = 300.0
CLIENT_TIMEOUT = 150.0  # longer than serve.timeout (120 s), so the server's 504 is what a client sees


def log(msg: str) -> None:
    print(f"[serve-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data and index


def datasets_dir() -> Path:
    """../shared/datasets beside the project, or $RAG_DATASETS."""
    root = Path(os.environ.get("RAG_DATASETS") or REPO_ROOT.parent / "shared" / "datasets")
    if not (root / "beir-scifact" / "corpus.jsonl").is_file():
        raise SystemExit(f"serve_bench: {root}/beir-scifact/corpus.jsonl not found (set RAG_DATASETS to the folder "
                         "that holds beir-scifact/)")
    return root


def scifact(root: Path, documents: int | None) -> tuple[list[str], list[str]]:
    """The first `documents` corpus records (JSONL lines, all when None) and every claim."""
    with (root / "beir-scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        records = [line for line in fh if line.strip()]
    with (root / "beir-scifact" / "queries.jsonl").open(encoding="utf-8") as fh:
        questions = [json.loads(line)["text"] for line in fh if line.strip()]
    return records[:documents], questions


def engine_settings(index: Path) -> Settings:
    """rag's defaults, the caller's RAG_* ignored, as the server subprocess gets them."""
    return Settings.load(overrides={"index.path": str(index), **SCIFACT_FIELDS}, environ={})


def ensure_index(records: list[str]) -> Path:
    """An index of these records, reused when its marker says it holds exactly them and it still
    opens with the current code and model; rebuilt otherwise (indexing takes minutes here)."""
    index = BENCH_INDEXES / f"scifact-{len(records)}"
    marker_file = index.with_suffix(".json")
    settings = engine_settings(index)
    marker = {"records_sha256": hashlib.sha256("".join(records).encode()).hexdigest(),
              "documents": len(records), "embedding": settings.embedding.model_dump(mode="json"),
              "chunking": settings.chunking.model_dump(mode="json")}
    if marker_file.is_file() and json.loads(marker_file.read_text(encoding="utf-8")) == marker:
        engine = Engine(settings)
        try:
            engine.reader()
            log(f"reusing the index {index.relative_to(REPO_ROOT)}")
            return index
        except RagError as exc:
            log(f"rebuilding {index.relative_to(REPO_ROOT)}: {exc}")
        finally:
            engine.close()
    shutil.rmtree(index, ignore_errors=True)
    marker_file.unlink(missing_ok=True)
    index.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        corpus = Path(tmp) / "scifact.jsonl"
        corpus.write_text("".join(records), encoding="utf-8")
        log(f"indexing {len(records):,} SciFact abstracts into {index.relative_to(REPO_ROOT)} (once)")
        started = time.perf_counter()
        engine = Engine(settings)
        try:
            engine.index([corpus])
        finally:
            engine.close()
    log(f"indexed in {time.perf_counter() - started:.0f} s")
    marker_file.write_text(json.dumps(marker, indent=2), encoding="utf-8")
    return index


# --------------------------------------------------------------------------- measuring


@dataclass
class Phase:
    """One measured phase; latencies are of successful calls only, in seconds."""

    name: str
    clients: int
    seconds: float = 0.0
    requests: int = 0  # questions sent (for search_many, questions in its batches)
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # server, bench, other, steal: % of one core
    abstained: int = 0

    @property
    def errors(self) -> int:
        return self.requests - self.ok

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else None

    def error(self, text: str) -> None:
        if len(self.error_samples) < ERRORS_SHOWN:
            self.error_samples.append(text)


class CpuMeter:
    """CPU seconds between start() and stop() of the server, of this process, of everything else
    on the machine, and stolen: time this (virtual) machine wanted to run but its host gave to
    other machines. On a shared machine the last two say how far to trust a phase."""

    def __init__(self, server_pid: int | None) -> None:
        self._server = psutil.Process(server_pid) if server_pid else None
        self._me = psutil.Process()
        self._start: tuple[float, ...] = ()
        self._started = 0.0

    @staticmethod
    def _process(proc: psutil.Process | None) -> float:
        if proc is None:
            return 0.0
        t = proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def _now(self) -> tuple[float, ...]:
        t = psutil.cpu_times()  # guest time is already part of user time on Linux
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        return self._process(self._server), self._process(self._me), busy, getattr(t, "steal", 0.0)

    def start(self) -> None:
        self._start, self._started = self._now(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._started
        server, me, busy, steal = (b - a for a, b in zip(self._start, self._now()))
        shares = {"server": server, "bench": me, "other": max(0.0, busy - server - me), "steal": steal}
        if self._server is None:
            del shares["server"]
        return {name: 100 * seconds / wall for name, seconds in shares.items()}


def in_process(name: str, call: Callable[[list[str]], Any], questions: Iterator[str], batch: int,
               seconds: float) -> Phase:
    """One caller running `call` on `batch` questions at a time until `seconds` have passed."""
    phase = Phase(name, 1)
    for _ in range(WARMUP):
        call([next(questions) for _ in range(batch)])
    meter = CpuMeter(None)
    meter.start()
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        asked = [next(questions) for _ in range(batch)]
        t = time.perf_counter()
        try:
            call(asked)
        except RagError as exc:
            phase.error(str(exc))
        else:
            phase.ok += batch
            phase.latencies.append(time.perf_counter() - t)
        phase.requests += batch
    phase.seconds = time.perf_counter() - started
    phase.cpu = meter.stop()
    return phase


def free_port() -> int:
    """A port of 127.0.0.1 nobody listens on now, so that runs never collide with a real server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `rag serve`: where it listens, its process (for its CPU) and its log."""

    base: str
    pid: int
    log: Path


@contextmanager
def running_server(index: Path, keys_file: Path, log_file: Path) -> Iterator[Server]:
    """`python -m rag serve` on the index until the block ends; ready when /readyz says so
    (models loaded, index open)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_SERVE_KEYS_FILE=str(keys_file), PYTHONUNBUFFERED="1")
    with log_file.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rag", "serve", "--port", str(port), "--index", str(index)],
                                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve_bench: the server did not become ready:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Server(base, proc.pid, log_file)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _check(route: str, response: httpx.Response) -> tuple[str | None, dict[str, Any]]:
    """What is wrong with a response (None: a well-formed 200), as a client would find out, and
    its JSON body."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}", {}
    try:
        body = response.json()
    except ValueError:
        return f"HTTP 200 with a body that is not JSON: {response.text[:300]}", {}
    wanted = "hits" if route == "/v1/search" else "answer"
    if not isinstance(body, dict) or wanted not in body:
        return f"HTTP 200 without {wanted!r}: {response.text[:300]}", {}
    return None, body


async def http_phase(name: str, server: Server, token: str, route: str, extra: dict[str, Any],
                     questions: Iterator[str], clients: int, seconds: float) -> Phase:
    """`clients` concurrent clients, each sending its next question when its last is answered."""
    phase = Phase(name, clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.base, headers=headers, limits=limits,
                                 timeout=CLIENT_TIMEOUT) as client:
        for _ in range(WARMUP):
            response = await client.post(route, json={"question": next(questions), **extra})
            problem, _ = _check(route, response)
            if problem:
                raise SystemExit(f"serve_bench: warm-up request to {route} failed: {problem}")

        async def one_client(deadline: float) -> None:
            while time.perf_counter() < deadline:
                phase.requests += 1
                t = time.perf_counter()
                try:
                    response = await client.post(route, json={"question": next(questions), **extra})
                except httpx.HTTPError as exc:
                    phase.error(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - t
                problem, body = _check(route, response)
                if problem:
                    phase.error(problem)
                    if response.status_code == 503:  # busy: wait as told, like a well-behaved client
                        wait = float(response.headers.get("retry-after", 1))
                        await asyncio.sleep(max(0.0, min(wait, deadline - time.perf_counter())))
                    continue
                phase.ok += 1
                phase.latencies.append(elapsed)
                phase.abstained += bool(body.get("abstained"))

        meter = CpuMeter(server.pid)
        meter.start()
        started = time.perf_counter()
        await asyncio.gather(*(one_client(started + seconds) for _ in range(clients)))
        phase.seconds = time.perf_counter() - started
        phase.cpu = meter.stop()
    return phase


def server_log_problems(log_file: Path) -> tuple[dict[int, int], dict[str, int]]:
    """From the server's log: failed requests by status, and every other line that is neither
    uvicorn's INFO nor an access line of a 2xx request (warnings, tracebacks) with how often it
    came, its timestamp left out so that repeats count as one."""
    failed: dict[int, int] = {}
    other: dict[str, int] = {}
    for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.startswith("INFO:"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict) and "status" in entry:
            if not 200 <= int(entry["status"]) < 300:
                failed[int(entry["status"])] = failed.get(int(entry["status"]), 0) + 1
            continue
        text = re.sub(r"^\d{4}-\d\d-\d\d [\d:,.]+ ", "", line)
        other[text] = other.get(text, 0) + 1
    return failed, other


# --------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def table(phases: list[Phase]) -> str:
    head = ["phase", "clients", "seconds", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors",
            "server CPU %", "bench CPU %", "other CPU %", "steal %"]
    rows = [head, ["---"] + ["---:"] * (len(head) - 1)]
    for p in phases:
        cpu = [f"{p.cpu[k]:.0f}" if k in p.cpu else "-" for k in ("server", "bench", "other", "steal")]
        rows.append([p.name, str(p.clients), f"{p.seconds:.1f}", f"{p.requests:,}", f"{p.rate:.1f}",
                     *(_ms(p.percentile_ms(q)) for q in (50, 95, 99)), str(p.errors), *cpu])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def verdict(search: Phase, search_http: Phase, ask_http: Phase) -> tuple[list[str], bool]:
    """The targets of the issue, each with its figure, and whether all are met."""
    ratio = search_http.rate / search.rate if search.rate else 0.0
    errors = search_http.errors + ask_http.errors
    lines = [f"HTTP /v1/search {search_http.rate:.1f} req/s vs in-process Engine.search {search.rate:.1f}/s: "
             f"{ratio:.2f}x (target >= {TARGET_RATIO:.2f}x): {'met' if ratio >= TARGET_RATIO else 'NOT met'}",
             f"errors over both HTTP phases: {errors} (target 0): {'met' if errors == 0 else 'NOT met'}",
             f"/v1/ask (extractive): {ask_http.abstained:,} of {ask_http.ok:,} answers abstained "
             "(an abstention below the relevance floor skips the generator)"]
    return lines, ratio >= TARGET_RATIO and errors == 0


NOTE = ("req/s counts successful responses over the time until the last request in flight was answered; "
        "latencies are of successful requests (for search_many: of one call of 16 questions). CPU is in % of "
        "one core over the phase: server = the `rag serve` process, bench = this script (the engine in the "
        "in-process rows, the httpx load generator in the HTTP rows), other = every other process on the machine, "
        "steal = time the machine's virtual CPUs waited while the host ran other machines.")


def reproduce_command(argv: list[str]) -> str:
    cmd = "python3 benchmarks/serve_bench.py" + (" " + shlex.join(argv) if argv else "")
    if os.environ.get("RAG_DATASETS"):
        cmd = f"RAG_DATASETS={shlex.quote(os.environ['RAG_DATASETS'])} {cmd}"
    return cmd


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of each phase (default: 60)")
    p.add_argument("--clients", type=int, default=50, help="concurrent HTTP clients (default: 50)")
    p.add_argument("--documents", type=int, metavar="N",
                   help="index only the first N SciFact abstracts (default: all 5,183)")
    p.add_argument("--no-record", action="store_true", help="do not append the results to docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.clients < 1 or (args.documents is not None and args.documents < 1):
        p.error("--seconds, --clients and --documents must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    records, questions = scifact(datasets_dir(), args.documents)
    index = ensure_index(records)
    settings = engine_settings(index)
    cycle = itertools.cycle(questions)

    engine = Engine(settings)
    try:
        log(f"in process: Engine.search, one caller, {args.seconds:g} s")
        search = in_process("in-process Engine.search", lambda qs: engine.search(qs[0]), cycle, 1, args.seconds)
        log(f"in process: Engine.search_many in batches of {BATCH}, {args.seconds:g} s")
        search_many = in_process(f"in-process Engine.search_many (batches of {BATCH})", engine.search_many, cycle,
                                 BATCH, args.seconds)
    finally:
        engine.close()

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        keys_file = Path(tmp) / "keys.sqlite"
        _, token = KeyStore(keys_file).add("serve-bench", "read")
        log("starting `python -m rag serve` on 127.0.0.1")
        with running_server(index, keys_file, Path(tmp) / "serve.log") as server:
            log(f"HTTP: POST /v1/search, {args.clients} clients, {args.seconds:g} s")
            search_http = asyncio.run(http_phase("HTTP /v1/search", server, token, "/v1/search", {}, cycle,
                                                 args.clients, args.seconds))
            log(f"HTTP: POST /v1/ask (extractive), {args.clients} clients, {args.seconds:g} s")
            ask_http = asyncio.run(http_phase("HTTP /v1/ask (extractive)", server, token, "/v1/ask",
                                              {"generator": "extractive"}, cycle, args.clients, args.seconds))
        failed, other_lines = server_log_problems(server.log)

    phases = [search, search_many, search_http, ask_http]
    body = table(phases)
    lines, ok = verdict(search, search_http, ask_http)
    print(body + "\n\n" + "\n".join(f"- {line}" for line in lines) + "\n\n" + NOTE)
    for phase in phases:
        for sample in phase.error_samples:
            print(f"error in {phase.name}: {sample}")
    if failed:
        print("\nthe server's access log: failed requests by status: "
              + ", ".join(f"{status}: {count:,}" for status, count in sorted(failed.items())))
    if other_lines:
        print(f"\nthe server logged {len(other_lines):,} distinct lines other than access and INFO lines:")
        for text, count in list(other_lines.items())[:LOG_LINES_SHOWN]:
            print(f"  {count:,}x {text}")

    if not args.no_record:
        gpu = "none" if shutil.which("nvidia-smi") is None else "present"
        serve = settings.serve
        append_section(f"Serving: {args.clients} clients against `rag serve`", started, [
            f"Machine: {machine()}, GPU: {gpu}; client and server on the same machine (127.0.0.1)",
            f"Index: first {len(records):,} BEIR SciFact abstracts; questions: the {len(questions):,} SciFact "
            f"claims, cycled; k={settings.search.k}, {settings.search.mode} search, default settings "
            f"(serve.batch_size {serve.batch_size}, serve.queue_depth {serve.queue_depth}), one server worker",
            f"Each phase {args.seconds:g} s after {WARMUP} warm-up calls; HTTP requests carry a read key; "
            "clients: asyncio with one shared httpx.AsyncClient",
            f"Reproduce: `{reproduce_command(argv)}`"],
            body + "\n\n" + "\n".join(f"- {'**' + line + '**' if i < 2 else line}" for i, line in enumerate(lines))
            + "\n\n" + NOTE + "\n")
        log("appended to docs/benchmarks.md")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
