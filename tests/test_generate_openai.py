import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rag.citations import Passage
from rag.generate.base import GeneratorError
from rag.generate.openai import OpenAIGenerator
from rag.prompt import Prompt

from openai_server import ChatServer


def prompt() -> Prompt:
    passage = Passage(1, "Lisbon: 25 working days.", "handbook/leave.md", "corpora/handbook/leave.md",
                      "Leave policy", "", 0.9, (1,))
    return Prompt("How much leave in Lisbon?", "en", "You answer from passages.", "Passages... Question...",
                  "completion text", [passage], "I don't know.")


def test_chat_completion_and_usage_and_auth():
    with ChatServer() as server:
        gen = OpenAIGenerator(server.base_url, "tiny", api_key="sk-test")
        (out,) = gen.generate([prompt()], max_new_tokens=32)
        assert out.text == "Lisbon staff get 25 working days [1]."
        assert (out.prompt_tokens, out.completion_tokens) == (42, 9)
        body = server.requests[0]["body"]
        assert body["model"] == "tiny" and body["max_tokens"] == 32 and body["temperature"] == 0.0
        assert body["messages"][0] == {"role": "system", "content": "You answer from passages."}
        assert server.requests[0]["auth"] == "Bearer sk-test"


def test_streaming_over_server_sent_events():
    with ChatServer() as server:
        pieces = list(OpenAIGenerator(server.base_url, "tiny").stream(prompt(), 32))
        assert len(pieces) > 3 and "".join(pieces).strip() == "Lisbon staff get 25 working days [1]."
        assert server.requests[0]["body"]["stream"] is True


def test_retries_5xx_and_429_with_backoff_then_succeeds():
    with ChatServer() as server:
        server.failures = [503, 502, 429]
        gen = OpenAIGenerator(server.base_url, "tiny", retries=3, backoff=0.05)
        started = time.monotonic()
        (out,) = gen.generate([prompt()], 16)
        assert out.text.startswith("Lisbon") and len(server.requests) == 4
        assert time.monotonic() - started >= 0.05 + 0.1 + 0.2  # exponential backoff


def test_retry_after_is_honoured():
    with ChatServer() as server:
        server.failures, server.retry_after = [429], "0.5"
        started = time.monotonic()
        OpenAIGenerator(server.base_url, "tiny", retries=1, backoff=0.01).generate([prompt()], 16)
        assert time.monotonic() - started >= 0.5


def test_gives_up_after_the_retries_and_names_the_url():
    with ChatServer() as server:
        server.failures = [503] * 5
        gen = OpenAIGenerator(server.base_url, "tiny", retries=2, backoff=0.01)
        with pytest.raises(GeneratorError, match=r"/v1/chat/completions answered HTTP 503: scripted failure"):
            gen.generate([prompt()], 16)
        assert len(server.requests) == 3


def test_client_errors_are_not_retried():
    with ChatServer() as server:
        server.failures = [400]
        with pytest.raises(GeneratorError, match="HTTP 400"):
            OpenAIGenerator(server.base_url, "tiny", retries=3, backoff=0.01).generate([prompt()], 16)
        assert len(server.requests) == 1


def test_unreachable_server_names_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    gen = OpenAIGenerator(f"http://127.0.0.1:{port}/v1", "tiny", retries=1, backoff=0.01)
    with pytest.raises(GeneratorError, match=rf"cannot reach the generator at http://127.0.0.1:{port}/v1/chat/completions"):
        gen.generate([prompt()], 16)


def test_timeout_is_a_clear_error():
    with ChatServer() as server:
        server.delay = 1.0
        gen = OpenAIGenerator(server.base_url, "tiny", timeout=0.2, retries=0)
        with pytest.raises(GeneratorError, match="did not answer in time"):
            gen.generate([prompt()], 16)


def test_missing_base_url_says_which_setting():
    with pytest.raises(GeneratorError, match="RAG_GENERATE_OPENAI_BASE_URL"):
        OpenAIGenerator("", "tiny")


def test_a_batch_is_sent_at_once_up_to_the_concurrency_over_kept_connections():
    with ChatServer() as server:
        server.delay = 0.3
        gen = OpenAIGenerator(server.base_url, "tiny", concurrency=3)
        started = time.monotonic()
        outs = gen.generate([prompt()] * 9, 16)
        elapsed = time.monotonic() - started
        gen.close()
        assert [o.text for o in outs] == ["Lisbon staff get 25 working days [1]."] * 9
        assert server.max_in_flight == 3 and 3 * 0.3 <= elapsed < 9 * 0.3 / 2, "three rounds of three, not nine"
        assert len(server.connections) <= 3, "the pool keeps its connections alive for the next requests"


def test_streams_and_completions_from_many_threads_share_one_limit():
    with ChatServer() as server:
        server.delay = 0.2
        gen = OpenAIGenerator(server.base_url, "tiny", concurrency=2)
        calls = [lambda: "".join(gen.stream(prompt(), 16)), lambda: gen.generate([prompt()], 16)[0].text] * 3
        with ThreadPoolExecutor(len(calls)) as pool:
            texts = list(pool.map(lambda call: call(), calls))
        gen.close()
        assert {t.strip() for t in texts} == {"Lisbon staff get 25 working days [1]."}
        assert server.max_in_flight == 2 and len(server.requests) == 6


def test_an_abandoned_stream_gives_its_slot_back():
    with ChatServer() as server:
        gen = OpenAIGenerator(server.base_url, "tiny", concurrency=1)
        pieces = gen.stream(prompt(), 16)
        assert next(pieces)
        pieces.close()  # a client that went away
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(gen.generate, [prompt()], 16).result(5)[0].text.startswith("Lisbon")
        gen.close()


def test_the_concurrency_setting_is_checked_and_named():
    from rag.config import Settings
    from rag.errors import ConfigError

    with pytest.raises(GeneratorError, match="generate.openai_concurrency is 0"):
        OpenAIGenerator("http://127.0.0.1:1/v1", "tiny", concurrency=0)
    for bad in (0, 257):
        with pytest.raises(ConfigError, match=r"generate.openai_concurrency = \d+: .*1 to 256"):
            Settings.load(overrides={"generate.openai_concurrency": bad}, environ={})
    assert Settings.load(environ={"RAG_GENERATE_OPENAI_CONCURRENCY": "32"}).generate.openai_concurrency == 32
