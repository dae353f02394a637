"""A real `rag serve` process on a free port of 127.0.0.1, for the service's tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rag import Engine, Settings
from rag.embed import Embedder
from rag.serve.keys import KeyStore

# The fact only the finance collection holds: a key limited to HR must never receive it.
FINANCE_FACT = "travel reimbursement limit is 640 EUR per trip"
KNOWLEDGE = {
    "hr": {"leave.md": "# Leave\n\nEvery employee gets 25 days of annual leave.",
           "travel.md": "# Travel\n\nBook trips through the travel portal before you go."},
    "finance": {"limits.md": f"# Travel reimbursement\n\nThe {FINANCE_FACT}, approved by finance."},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_knowledge(root: Path, embedder: Embedder) -> Path:
    """An index with collections hr and finance (from KNOWLEDGE) under root/index."""
    index = root / "index"
    for collection, files in KNOWLEDGE.items():
        folder = root / collection
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        settings = Settings.load(overrides={"index.path": str(index), "ingest.collection": collection}, environ={})
        Engine(settings, embedder=embedder).index([folder])
    return index


@dataclass
class Server:
    base: str
    index: Path
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)
    pid: int = 0  # the server process

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def add_key(self, name: str, scope: str, filters: list[str] | None = None) -> dict[str, str]:
        _, self.tokens[name] = KeyStore(self.index / "keys.sqlite").add(name, scope, filters or [])
        return self.auth(name)


@contextmanager
def running_server(index: Path, log: Path, env: dict[str, str] | None = None,
                   args: list[str] | None = None) -> Iterator[Server]:
    """`python -m rag serve` on the index until the block ends; waits for /readyz."""
    with running_servers(index, [log], env, args) as (server,):
        yield server


@contextmanager
def running_servers(index: Path, logs: list[Path], env: dict[str, str] | None = None,
                    args: list[str] | None = None) -> Iterator[list[Server]]:
    """One `python -m rag serve` per log file on the same index, started together (their models
    load side by side) and stopped when the block ends; waits for every /readyz."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | (env or {})
    started: list[tuple[subprocess.Popen, Server]] = []
    try:
        for log in logs:
            port = free_port()
            with log.open("w") as out:
                proc = subprocess.Popen([sys.executable, "-m", "rag", "serve", "--port", str(port), "--index",
                                         str(index), *(args or [])], env=environ, stdout=out, stderr=subprocess.STDOUT)
            started.append((proc, Server(f"http://127.0.0.1:{port}", index, log, pid=proc.pid)))
        deadline = time.monotonic() + 180
        for proc, server in started:
            while True:
                try:
                    if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, server.log.read_text()
                assert time.monotonic() < deadline, "the server never became ready: " + server.log.read_text()
                time.sleep(0.3)
        yield [server for _, server in started]
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
