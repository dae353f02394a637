"""Any OpenAI-compatible /v1/chat/completions server: vLLM, TGI, Ollama, llama.cpp's server.

Streams over server-sent events, retries 429 and 5xx with exponential backoff (honouring
Retry-After), and names the URL in every error so the user knows which server failed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Iterator, Literal

import httpx

from rag.generate.base import Generation, GeneratorError
from rag.prompt import Prompt

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}


class OpenAIGenerator:
    style: Literal["chat", "completion"] = "chat"

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, context_tokens: int = 8192, temperature: float = 0.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not base_url:
            raise GeneratorError("generator 'openai' needs a base URL: set generate.openai_base_url "
                                 "(RAG_GENERATE_OPENAI_BASE_URL), e.g. http://localhost:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.name = f"openai:{model}"
        self.retries = retries
        self.backoff = backoff
        self.context_tokens = context_tokens
        self.temperature = temperature
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), headers=headers,
                                    transport=transport)

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

    def _send(self, payload: dict[str, Any], stream: bool) -> httpx.Response:
        """POST with retries; the caller closes the response."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            response = None
            try:
                request = self._client.build_request("POST", self.url, json=payload)
                response = self._client.send(request, stream=stream)
                if response.status_code in RETRY_STATUS and attempt < self.retries:
                    log.warning("%s answered %d; retrying (%d/%d)", self.url, response.status_code, attempt + 1,
                                self.retries)
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
                if attempt < self.retries:
                    self._wait(attempt, None)
                    continue
                if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                    raise GeneratorError(f"cannot reach the generator at {self.url} ({exc}); is the server "
                                         "running, and is generate.openai_base_url right?") from None
                raise GeneratorError(f"the generator at {self.url} did not answer in time ({exc!r}); raise "
                                     "generate.timeout or check the server") from None
            except httpx.HTTPError as exc:
                raise GeneratorError(f"request to {self.url} failed: {exc}") from None
        raise GeneratorError(f"request to {self.url} failed after {self.retries + 1} attempts: {last}")

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> list[Generation]:
        out = []
        for prompt in prompts:
            started = time.perf_counter()
            response = self._send(self._payload(prompt, max_new_tokens, False), stream=False)
            try:
                data = response.json()
                text = data["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                raise GeneratorError(f"{self.url} returned something that is not a chat completion: "
                                     f"{response.text[:200]}") from None
            usage = data.get("usage") or {}
            out.append(Generation(text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                                  {"first_token": time.perf_counter() - started}))
        return out

    def stream(self, prompt: Prompt, max_new_tokens: int) -> Iterator[str]:
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
        self._client.close()
