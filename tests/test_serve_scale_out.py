"""Answers from an OpenAI-compatible server scale out: asks sent to the HTTP service at once reach
the server at once, up to generate.openai_concurrency and never more, streamed ones included.

The app is the real one (`create_app`, uvicorn on 127.0.0.1, called with httpx); the server is the
tests' stub, slowed down so that overlapping asks show in the clock and in its in-flight count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from openai_server import ChatServer
from serving import build_knowledge, free_port

from rag import Engine, Settings
from rag.serve.app import create_app

LEAVE = "How many days of annual leave does an employee get?"
DELAY = 0.5


@pytest.fixture(scope="module")
def index(tmp_path_factory, embedder) -> Path:
    return build_knowledge(tmp_path_factory.mktemp("scale-out"), embedder)


@contextmanager
def service(index: Path, embedder, chat: ChatServer, concurrency: int) -> Iterator[str]:
    """The HTTP service answering with the stub, in this process; yields its base URL."""
    settings = Settings.load(overrides={
        "index.path": str(index), "answer.generator": "openai", "generate.openai_base_url": chat.base_url,
        "generate.openai_model": "stub", "generate.openai_concurrency": concurrency, "generate.retries": 0,
    }, environ={})
    app = create_app(settings, open_access=True, engine=Engine(settings, embedder=embedder))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service never started"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def ask(base: str, stream: bool = False) -> str:
    """One ask, as a portal sends it; the answer's text (a streamed one's final `answer` event)."""
    with httpx.Client(timeout=30) as client:
        response = client.post(f"{base}/v1/ask", json={"question": LEAVE, "stream": stream})
        assert response.status_code == 200, response.text
        if stream:
            assert "event: answer" in response.text, response.text
            return response.text
        return response.json()["answer"]


def ask_at_once(base: str, streams: list[bool]) -> float:
    """Sends the asks together, from a thread each; the seconds until the last was answered."""
    started = time.monotonic()
    with ThreadPoolExecutor(len(streams)) as pool:
        answers = list(pool.map(lambda stream: ask(base, stream), streams))
    assert all("25 working days" in answer for answer in answers)
    return time.monotonic() - started


def test_concurrent_asks_reach_the_server_together(index, embedder):
    with ChatServer() as chat, service(index, embedder, chat, concurrency=8) as base:
        ask(base)  # the first ask opens the index and warms the paths up
        chat.delay, chat.max_in_flight = DELAY, 0
        elapsed = ask_at_once(base, [False] * 6)
        assert chat.max_in_flight >= 3, "asks sent together were generated together"
        assert elapsed < 6 * DELAY / 2, f"6 asks of {DELAY} s took {elapsed:.2f} s: they did not overlap"


def test_with_a_concurrency_of_one_asks_take_turns(index, embedder):
    with ChatServer() as chat, service(index, embedder, chat, concurrency=1) as base:
        ask(base)
        chat.delay, chat.max_in_flight = DELAY / 2, 0
        elapsed = ask_at_once(base, [False, True, False])
        assert chat.max_in_flight == 1
        assert elapsed >= 3 * DELAY / 2


def test_plain_and_streamed_asks_never_exceed_the_concurrency(index, embedder):
    with ChatServer() as chat, service(index, embedder, chat, concurrency=2) as base:
        ask(base)
        chat.delay, chat.max_in_flight = DELAY / 2, 0
        elapsed = ask_at_once(base, [False, True] * 3)
        assert chat.max_in_flight == 2, "two at a time: never more, and not fewer with six waiting"
        assert elapsed >= 3 * DELAY / 2
