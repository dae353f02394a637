"""One way for the framework adapters to reach `rag`: an index in this process, or a running
`rag serve` over HTTP. Both answer the same four calls with the same shapes, so an adapter is
written once and works either way.

The adapters only translate; searching, filtering and answering stay in the Engine (locally)
or the service (remotely). Remotely, the service also adds the key's own filters, so a key
limited to one collection never receives another's passages, whatever the adapter asks.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from rag.config import Settings
from rag.engine import Engine
from rag.errors import RagError
from rag.records import Hit

Mode = Literal["hybrid", "dense", "bm25"]
Generator = Literal["local", "openai", "extractive"]

# Answers from a CPU-bound generator can take a while; the service answers 504 after its own
# serve.timeout, so this only has to be longer than that.
DEFAULT_TIMEOUT = 120.0


class RemoteError(RagError):
    """`rag serve` answered with an error status (or could not be reached: status 0). The message
    names the URL, the status and the service's reason, never the key."""

    def __init__(self, message: str, url: str, status: int) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class Backend(Protocol):
    """What the adapters need: ranked passages and cited answers, sync and async.

    `ask` returns the `rag ask --json` object (question, answer, citations, passages, abstained,
    grounded, warnings, timings, ...); from a service it also has the answer's `id`, which
    POST /v1/feedback refers to.
    """

    def search(self, question: str, k: int | None, filters: list[str], mode: Mode | None) -> list[Hit]: ...

    async def asearch(self, question: str, k: int | None, filters: list[str], mode: Mode | None) -> list[Hit]: ...

    def ask(self, question: str, k: int | None, filters: list[str], generator: Generator | None) -> dict[str, Any]: ...

    async def aask(self, question: str, k: int | None, filters: list[str],
                   generator: Generator | None) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LocalBackend:
    """An Engine in this process. Calls take turns (one lock): the models use every core already,
    and two threads in one model are slower than one after the other. Async calls run in a
    thread so that they do not block the event loop."""

    def __init__(self, engine: Engine, owned: bool) -> None:
        self.engine = engine
        self._owned = owned
        self._lock = threading.Lock()

    def search(self, question: str, k: int | None, filters: list[str], mode: Mode | None) -> list[Hit]:
        with self._lock:
            return self.engine.search(question, k, filters, mode)

    async def asearch(self, question: str, k: int | None, filters: list[str], mode: Mode | None) -> list[Hit]:
        return await asyncio.to_thread(self.search, question, k, filters, mode)

    def ask(self, question: str, k: int | None, filters: list[str], generator: Generator | None) -> dict[str, Any]:
        with self._lock:
            return self.engine.ask(question, k, generator, filters).as_dict()

    async def aask(self, question: str, k: int | None, filters: list[str],
                   generator: Generator | None) -> dict[str, Any]:
        return await asyncio.to_thread(self.ask, question, k, filters, generator)

    def close(self) -> None:
        if self._owned:  # an Engine the caller passed in is the caller's to close
            self.engine.close()


class RemoteBackend:
    """`rag serve`'s POST /v1/search and /v1/ask, with the key sent as `Bearer`.

    One sync client is kept and reused (it is thread-safe). Each async call opens its own
    AsyncClient: an AsyncClient's connections belong to the event loop that opened them, and
    LangChain and LlamaIndex callers may run each call in a new loop (asyncio.run per call is
    common).
    """

    def __init__(self, url: str, api_key: str | None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = base_url(url)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        # Made here, not on first use: LangChain's batch calls from several threads at once.
        self._client = httpx.Client(headers=self._headers, timeout=timeout)

    def search(self, question: str, k: int | None, filters: list[str], mode: Mode | None) -> list[Hit]:
        body = self._post("/v1/search", {"question": question, "k": k, "filters": filters, "mode": mode})
        return [hit_from_json(hit) for hit in body["hits"]]

    async def asearch(self, question: str, k: int | None, filters: list[str], mode: Mode | None) -> list[Hit]:
        body = await self._apost("/v1/search", {"question": question, "k": k, "filters": filters, "mode": mode})
        return [hit_from_json(hit) for hit in body["hits"]]

    def ask(self, question: str, k: int | None, filters: list[str], generator: Generator | None) -> dict[str, Any]:
        return self._post("/v1/ask", {"question": question, "k": k, "filters": filters, "generator": generator})

    async def aask(self, question: str, k: int | None, filters: list[str],
                   generator: Generator | None) -> dict[str, Any]:
        return await self._apost("/v1/ask", {"question": question, "k": k, "filters": filters,
                                             "generator": generator})

    def close(self) -> None:
        self._client.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.url + path
        try:
            response = self._client.post(url, json=_without_none(body))
        except httpx.HTTPError as exc:
            raise _unreachable(url, exc) from None
        return _json_or_error(url, response)

    async def _apost(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.url + path
        try:
            async with httpx.AsyncClient(headers=self._headers, timeout=self._timeout) as client:
                response = await client.post(url, json=_without_none(body))
        except httpx.HTTPError as exc:
            raise _unreachable(url, exc) from None
        return _json_or_error(url, response)


def connect(index: str | Path | None = None, url: str | None = None, api_key: str | None = None, *,
            engine: Engine | None = None, settings: Settings | None = None,
            timeout: float = DEFAULT_TIMEOUT) -> Backend:
    """The backend for one adapter: `url` (with `api_key` when the service has keys) for a
    running `rag serve`; otherwise an index here, from `engine` (shared, not closed), `settings`,
    `index` (a path; the other settings as `rag` loads them: config.toml, $RAG_CONFIG, RAG_*), or
    the configured index when none is given."""
    if url is not None:
        if index is not None or engine is not None or settings is not None:
            raise RagError("give either url= (a running rag serve) or index=/engine=/settings= (an index in this "
                           "process), not both")
        return RemoteBackend(url, api_key, timeout)
    if api_key is not None:
        raise RagError("api_key= is for a running rag serve (url=); an index in this process needs no key")
    if engine is not None:
        if index is not None or settings is not None:
            raise RagError("give engine= alone: it already has its index and settings")
        return LocalBackend(engine, owned=False)
    if settings is not None and index is not None:
        settings = settings.model_copy(update={"index": settings.index.model_copy(update={"path": Path(index)})})
    elif settings is None:
        settings = Settings.load(overrides={"index.path": str(index)} if index is not None else None)
    return LocalBackend(Engine(settings), owned=True)


def base_url(url: str) -> str:
    """The service's root: "http://host:8000", "http://host:8000/" and OpenAI clients'
    "http://host:8000/v1" all name the same service."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise RagError(f"url {url!r} should start with http:// or https://, e.g. http://localhost:8000")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def hit_from_json(data: dict[str, Any]) -> Hit:
    """A Hit from `rag search --json` / POST /v1/search's shape (the chunk id inside the metadata)."""
    metadata = dict(data.get("metadata") or {})
    chunk_id = metadata.pop("chunk_id", -1)
    return Hit(data["text"], float(data["score"]), data["doc_id"], data["source"], metadata, int(chunk_id))


def hit_metadata(hit: Hit) -> dict[str, Any]:
    """What a framework document carries about its passage: the document's own metadata (title,
    collection, page or headings, and any field it was indexed with), where the passage is
    (`location`: "page 2" or "Handbook > Leave"), its ids, the fused score and each retriever's
    score (`scores`: dense, bm25, rerank)."""
    return {**hit.metadata, "doc_id": hit.doc_id, "source": hit.source,
            "title": str(hit.metadata.get("title") or hit.doc_id), "location": hit.location,
            "chunk_id": hit.chunk_id, "score": hit.score}


def question_of(value: Any) -> str:
    """A question from what a chain passes on: the text itself, or a mapping with "question"
    (LangChain's and LlamaIndex's usual input key; "input" and "query" are accepted too)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("question", "input", "query"):
            if isinstance(value.get(key), str):
                return value[key]
        raise RagError(f"the input has no question: expected a string or a dict with \"question\", got keys "
                       f"{sorted(value)}")
    raise RagError(f"the input has no question: expected a string or a dict with \"question\", got "
                   f"{type(value).__name__}")


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    """The service's request schemas are strict; absent fields take the service's defaults."""
    return {key: value for key, value in body.items() if value is not None}


def _unreachable(url: str, exc: httpx.HTTPError) -> RemoteError:
    reason = "timed out" if isinstance(exc, httpx.TimeoutException) else f"failed ({type(exc).__name__}: {exc})"
    return RemoteError(f"rag serve at {url}: the request {reason}; is `rag serve` running there?", url, 0)


def _json_or_error(url: str, response: httpx.Response) -> dict[str, Any]:
    if response.is_success:
        return response.json()
    detail = _detail(response)
    hint = {401: " (check the api_key: a key made with `rag keys add`)",
            403: " (the key's scope does not allow this)"}.get(response.status_code, "")
    raise RemoteError(f"rag serve at {url} answered {response.status_code} {response.reason_phrase}: {detail}{hint}",
                      url, response.status_code)


def _detail(response: httpx.Response) -> str:
    """The service's reason: FastAPI's {"detail": text or [validation errors]}, else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or "(no body)"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in detail
                         if isinstance(e, dict)) or str(detail)
    return str(body)[:300]
