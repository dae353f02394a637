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
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import httpx

from rag.config import Settings
from rag.engine import Engine
from rag.errors import RagError
from rag.names import SEARCH_MODES, GeneratorName, SearchMode
from rag.records import Hit

# The adapters' names for rag's own literals (rag.names), kept for their public signatures.
Mode = SearchMode
Generator = GeneratorName
# A conversation's earlier turns as the Engine and the service take them: {"role": "user" or
# "assistant", "content": text}, oldest first.
Turns = list[dict[str, str]]

# The most earlier turns `rag serve` takes in one request (its history limit); the Engine reads
# only the last few of them (rag.conversation.RECENT_TURNS), so the older ones are not sent.
MAX_TURNS = 200

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
    grounded, warnings, timings, query, ...); from a service it also has the answer's `id`, which
    POST /v1/feedback refers to. `history` is the conversation before the question (Turns): a
    follow-up ("How do I fix it?") is then searched as a standalone question, the answer's `query`.
    """

    def search(self, question: str, k: int | None, filters: list[str], mode: Mode | None,
               history: Turns | None = None) -> list[Hit]: ...

    async def asearch(self, question: str, k: int | None, filters: list[str], mode: Mode | None,
                      history: Turns | None = None) -> list[Hit]: ...

    def ask(self, question: str, k: int | None, filters: list[str], generator: Generator | None,
            history: Turns | None = None) -> dict[str, Any]: ...

    async def aask(self, question: str, k: int | None, filters: list[str], generator: Generator | None,
                   history: Turns | None = None) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LocalBackend:
    """An Engine in this process. Calls take turns (one lock): the models use every core already,
    and two threads in one model are slower than one after the other. Async calls run in a
    thread so that they do not block the event loop."""

    def __init__(self, engine: Engine, owned: bool) -> None:
        self.engine = engine
        self._owned = owned
        self._lock = threading.Lock()

    def search(self, question: str, k: int | None, filters: list[str], mode: Mode | None,
               history: Turns | None = None) -> list[Hit]:
        with self._lock:
            return self.engine.search(question, k, filters, mode, history or None)

    async def asearch(self, question: str, k: int | None, filters: list[str], mode: Mode | None,
                      history: Turns | None = None) -> list[Hit]:
        return await asyncio.to_thread(self.search, question, k, filters, mode, history)

    def ask(self, question: str, k: int | None, filters: list[str], generator: Generator | None,
            history: Turns | None = None) -> dict[str, Any]:
        with self._lock:
            return self.engine.ask(question, k, generator, filters, history=history or None).as_dict()

    async def aask(self, question: str, k: int | None, filters: list[str], generator: Generator | None,
                   history: Turns | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.ask, question, k, filters, generator, history)

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

    def search(self, question: str, k: int | None, filters: list[str], mode: Mode | None,
               history: Turns | None = None) -> list[Hit]:
        body = self._post("/v1/search", _body(question, k, filters, history, mode=mode))
        return [hit_from_json(hit) for hit in body["hits"]]

    async def asearch(self, question: str, k: int | None, filters: list[str], mode: Mode | None,
                      history: Turns | None = None) -> list[Hit]:
        body = await self._apost("/v1/search", _body(question, k, filters, history, mode=mode))
        return [hit_from_json(hit) for hit in body["hits"]]

    def ask(self, question: str, k: int | None, filters: list[str], generator: Generator | None,
            history: Turns | None = None) -> dict[str, Any]:
        return self._post("/v1/ask", _body(question, k, filters, history, generator=generator))

    async def aask(self, question: str, k: int | None, filters: list[str], generator: Generator | None,
                   history: Turns | None = None) -> dict[str, Any]:
        return await self._apost("/v1/ask", _body(question, k, filters, history, generator=generator))

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


# What each framework calls a message's sender, as rag's turns name it; None: not a turn of the
# conversation (a system prompt instructs a model, and rag's generator has its own; a tool's or
# function's output is data for an agent, not something the user said).
_ROLES: dict[str, str | None] = {
    "human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "model": "assistant",
    "chatbot": "assistant", "system": None, "developer": None, "tool": None, "function": None}
_QUESTION_KEYS = ("question", "input", "query")


def question_of(value: Any) -> str:
    """A question from what a chain passes on (see conversation_of), without its history."""
    return conversation_of(value)[0]


def conversation_of(value: Any) -> tuple[str, Turns]:
    """The question and the conversation before it, from what a chain or chat passes on:

    - the question's text;
    - a mapping with "question" (LangChain's and LlamaIndex's usual input key; "input" and
      "query" are accepted too) and, for a follow-up, its earlier messages under "history" or
      "chat_history" (LangChain's MessagesPlaceholder("chat_history")); or only "messages";
    - a list of messages: LangChain's (HumanMessage, AIMessage, ...), ("human", text) tuples,
      {"role", "content"} dicts, LlamaIndex ChatMessages, or plain text (a human message).

    In a list, the last human message is the question and the human and AI messages before it
    are the history (user and assistant turns); system and tool messages are left out (rag's
    generator has its own instructions, and a tool's output is not something the user said).
    """
    if isinstance(value, str):
        return value, []
    if isinstance(value, Mapping):
        if "messages" in value and not any(key in value for key in _QUESTION_KEYS):
            return _last_question(turns_of(value["messages"], "messages"))
        question = next((value[key] for key in _QUESTION_KEYS if isinstance(value.get(key), str)), None)
        if question is None:
            raise RagError(f"the input has no question: expected a string, a dict with \"question\" or a list of "
                           f"messages, got keys {sorted(map(str, value))}")
        key = "history" if value.get("history") is not None else "chat_history"
        return question, turns_of(value.get(key), key)
    if _is_message(value) or isinstance(value, tuple) and len(value) == 2 and str(value[0]).lower() in _ROLES:
        return _last_question(turns_of([value]))  # one message
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return _last_question(turns_of(value))
    raise RagError(f"the input has no question: expected a string, a dict with \"question\" or a list of messages, "
                   f"got {type(value).__name__}")


def turns_of(messages: Any, where: str = "history") -> Turns:
    """rag's turns from a conversation's messages (any kind conversation_of takes), oldest first:
    human and AI messages, each as {"role": "user" or "assistant", "content": text}; system and
    tool messages and empty ones left out."""
    if messages is None:
        return []
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise RagError(f"{where}: expected a list of messages, got {type(messages).__name__} (a chat memory "
                       "that gives its history as text should give messages: return_messages=True)")
    turns = []
    for n, message in enumerate(messages):
        role, content = _role_and_content(message)
        if not isinstance(role, str) or role.lower() not in _ROLES:
            raise RagError(f"{where}[{n}]: not a message rag knows (a human or AI message, (role, text), "
                           f"{{\"role\", \"content\"}}; role {role!r})")
        text = _text(content)
        if text is None:
            raise RagError(f"{where}[{n}]: the message's content is not text")
        if _ROLES[role.lower()] and text.strip():
            turns.append({"role": _ROLES[role.lower()], "content": text})  # type: ignore[dict-item]
    return turns


def _last_question(turns: Turns) -> tuple[str, Turns]:
    for n in range(len(turns) - 1, -1, -1):
        if turns[n]["role"] == "user":
            return turns[n]["content"], turns[:n]
    raise RagError("the messages hold no question: expected a human (user) message among them")


def _is_message(value: Any) -> bool:
    return hasattr(value, "content") and (hasattr(value, "role") or hasattr(value, "type"))


def _role_and_content(message: Any) -> tuple[Any, Any]:
    """(role, content) of a LangChain message (its `type`; a ChatMessage's `role`), a LlamaIndex
    ChatMessage or rag Turn (`role`), a mapping ("role" or "type"), a (role, content) pair, or text."""
    if isinstance(message, str):
        return "human", message
    if isinstance(message, Mapping):
        role, content = message.get("role") or message.get("type"), message.get("content")
    elif isinstance(message, (tuple, list)) and len(message) == 2:
        role, content = message
    else:
        role = getattr(message, "role", None) or getattr(message, "type", None)
        content = getattr(message, "content", None)
    return (role.value if isinstance(role, Enum) else role), content


def _text(content: Any) -> str | None:
    """A message's text: LangChain's content may be a list of blocks, of which the text ones count."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = [part if isinstance(part, str) else part.get("text") for part in content
                 if isinstance(part, str) or isinstance(part, Mapping) and part.get("type") == "text"]
        return "\n".join(part for part in parts if isinstance(part, str))
    return None


def check_k(k: Any) -> int | None:
    """`k` as the service takes it (1 to 1000 passages, or None for the index's own setting)."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000):
        raise RagError(f"k must be a whole number between 1 and 1000, not {k!r}")
    return k


def check_mode(mode: Any) -> Mode | None:
    """`mode` as the Engine takes it: hybrid, dense or bm25 (None: the index's own setting)."""
    if mode is not None and mode not in SEARCH_MODES:
        raise RagError(f"mode must be {', '.join(SEARCH_MODES)}, not {mode!r}")
    return mode


def check_filters(filters: Any) -> list[str]:
    """`filters` as a list of `rag search --filter` expressions (one string alone is a mistake:
    its letters are not expressions)."""
    if filters is None:
        return []
    if isinstance(filters, str) or not isinstance(filters, Sequence) or not all(isinstance(f, str) for f in filters):
        raise RagError(f"filters must be a list of expressions such as [\"collection=hr\"], not {filters!r}")
    return list(filters)


def _body(question: str, k: int | None, filters: list[str], history: Turns | None, **options: Any) -> dict[str, Any]:
    """A /v1/search or /v1/ask body; no "history" for a first question, and only the turns the
    service takes (MAX_TURNS, the most recent)."""
    recent = list(history[-MAX_TURNS:]) if history else None
    return {"question": question, "k": k, "filters": filters, "history": recent, **options}


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
