"""Any OpenAI-compatible /v1/chat/completions server: vLLM, TGI, Ollama, llama.cpp's server.

Streams over server-sent events, retries 429 and 5xx with exponential backoff (honouring
Retry-After), and names the URL in every error so the user knows which server failed.

Such a server is the scale-out path for answers: it batches whatever requests arrive together,
so this generator keeps one pooled HTTP client and sends up to `concurrency` requests at once
(`generate.openai_concurrency`), from any number of threads and from a batch of prompts alike.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Literal

import httpx

from rag.generate.base import Generation, GeneratorError
from rag.prompt import Prompt

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}


class OpenAIGenerator:
    style: Literal["chat", "completion"] = "chat"
    converses = True  # a chat model: reads earlier turns, rewrites follow-ups

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, context_tokens: int = 8192, temperature: float = 0.0,
                 transport: httpx.BaseTransport | None = None, concurrency: int = 8) -> None:
        if not base_url:
            raise GeneratorError("generator 'openai' needs a base URL: set generate.openai_base_url "
                                 "(RAG_GENERATE_OPENAI_BASE_URL), e.g. http://localhost:8000/v1")
        if not 1 <= concurrency <= 256:
            raise GeneratorError(f"generate.openai_concurrency is {concurrency}; set it (or "
                                 "RAG_GENERATE_OPENAI_CONCURRENCY) to 1-256 requests at once")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.name = f"openai:{model}"
        self.retries = retries
        self.backoff = backoff
        self.context_tokens = context_tokens
        self.temperature = temperature
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One client for every thread (httpx.Client is thread-safe), its pool sized so each request
        # in flight keeps a connection alive for the next instead of reconnecting.
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), headers=headers,
                                    transport=transport,
                                    limits=httpx.Limits(max_connections=concurrency,
                                                        max_keepalive_connections=concurrency))
        # Held for a whole request, retries and a stream's reading included: never more than
        # `concurrency` in flight, and no request waits on the pool (where the timeout would count).
        self._in_flight = threading.BoundedSemaphore(concurrency)
        self._fan_out: ThreadPoolExecutor | None = None
        self._fan_out_lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        """The server's tokenizer is unknown here: UTF-8 bytes / 3 over-counts English (about 4
        characters a token) and roughly matches Chinese (3 bytes a character), so prompts fit."""
        return math.ceil(len(text.encode("utf-8")) / 3)

    def _payload(self, prompt: Prompt, max_new_tokens: int, stream: bool) -> dict[str, Any]:
        return {"model": self.model, "messages": prompt.messages(), "max_tokens": max_new_tokens,
                "temperature": self.temperature, "stream": stream}

    def _wait(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self.backoff * (2 ** attempt)
        if response is not None and response.headers.get("retry-after"):
            try:
                delay = max(delay, min(float(response.headers["retry-after"]), 60.0))
            except ValueError:
                pass
        time.sleep(delay)

    def _error(self, response: httpx.Response) -> GeneratorError:
        try:
            detail = response.json().get("error", response.text)
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except (ValueError, AttributeError):
            detail = response.text
        return GeneratorError(f"{self.url} answered HTTP {response.status_code}: {str(detail)[:300]}")

    def _send(self, payload: dict[str, Any], stream: bool, timeout: float | None = None) -> httpx.Response:
        """POST with retries (none within a `timeout`, which is the whole request's); the caller
        closes the response."""
        last: Exception | None = None
        retries = 0 if timeout is not None else self.retries
        for attempt in range(retries + 1):
            response = None
            try:
                request = self._client.build_request("POST", self.url, json=payload,
                                                     **({"timeout": httpx.Timeout(timeout)} if timeout else {}))
                response = self._client.send(request, stream=stream)
                if response.status_code in RETRY_STATUS and attempt < retries:
                    log.warning("%s answered %d; retrying (%d/%d)", self.url, response.status_code, attempt + 1,
                                retries)
                    response.close()
                    self._wait(attempt, response)
                    continue
                if response.status_code >= 400:
                    response.read()
                    response.close()
                    raise self._error(response)
                return response
            except (httpx.ConnectError, httpx.TimeoutException) as exc:
                last = exc
                if attempt < retries:
                    self._wait(attempt, None)
                    continue
                if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                    raise GeneratorError(f"cannot reach the generator at {self.url} ({exc}); is the server "
                                         "running, and is generate.openai_base_url right?") from None
                raise GeneratorError(f"the generator at {self.url} did not answer in time ({exc!r}); raise "
                                     "generate.timeout or check the server") from None
            except httpx.HTTPError as exc:
                raise GeneratorError(f"request to {self.url} failed: {exc}") from None
        raise GeneratorError(f"request to {self.url} failed after {retries + 1} attempts: {last}")

    def generate(self, prompts: list[Prompt], max_new_tokens: int,
                 timeout: float | None = None) -> list[Generation]:
        """One completion per prompt, in order; several prompts are sent at once (up to
        `concurrency`), since the server batches them. With `timeout`, each request has that
        long, without retries."""
        if len(prompts) <= 1:
            return [self._complete(prompt, max_new_tokens, timeout) for prompt in prompts]
        return list(self._pool().map(lambda prompt: self._complete(prompt, max_new_tokens, timeout), prompts))

    def _pool(self) -> ThreadPoolExecutor:
        with self._fan_out_lock:
            if self._fan_out is None:
                self._fan_out = ThreadPoolExecutor(self.concurrency, thread_name_prefix="rag-openai")
            return self._fan_out

    def _complete(self, prompt: Prompt, max_new_tokens: int, timeout: float | None = None) -> Generation:
        with self._in_flight:
            started = time.perf_counter()
            response = self._send(self._payload(prompt, max_new_tokens, False), stream=False, timeout=timeout)
            try:
                data = response.json()
                text = data["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                raise GeneratorError(f"{self.url} returned something that is not a chat completion: "
                                     f"{response.text[:200]}") from None
            usage = data.get("usage") or {}
            return Generation(text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                              {"first_token": time.perf_counter() - started})

    def stream(self, prompt: Prompt, max_new_tokens: int) -> Iterator[str]:
        with self._in_flight:
            yield from self._stream(prompt, max_new_tokens)

    def _stream(self, prompt: Prompt, max_new_tokens: int) -> Iterator[str]:
        response = self._send(self._payload(prompt, max_new_tokens, True), stream=True)
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                except (ValueError, KeyError, IndexError, TypeError):
                    raise GeneratorError(f"{self.url} sent a malformed stream event: {data[:200]}") from None
                if delta:
                    yield delta
        except httpx.HTTPError as exc:
            raise GeneratorError(f"the stream from {self.url} broke off: {exc}") from None
        finally:
            response.close()

    def close(self) -> None:
        if self._fan_out is not None:
            self._fan_out.shutdown(wait=False, cancel_futures=True)
        self._client.close()
