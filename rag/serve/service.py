"""What the routes share: the engine, keys, one queue per model, upload jobs and metrics.

The routes translate HTTP to these calls and back; nothing here knows about retrieval either,
it only schedules Engine calls so that models are never run twice at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Hashable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from rag.answer import Answer
from rag.config import Settings
from rag.engine import Engine
from rag.errors import (ConfigError, IndexCorruptError, IndexLockedError, IndexMismatchError, IndexNotFoundError,
                        RagError)
from rag.records import Hit
from rag.serve.batching import ModelQueue, QueueFull
from rag.serve.feedback import FeedbackStore, feedback_path
from rag.serve.jobs import UploadJobs
from rag.serve.keys import ApiKey, KeyStore, Scope, keys_path
from rag.serve.metrics import Metrics, outcome
from rag.serve.spool import SpoolFull, UploadSpool

log = logging.getLogger(__name__)

class Service:
    def __init__(self, settings: Settings, open_access: bool, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.keys = KeyStore(keys_path(settings.index.path, settings.serve.keys_file))
        self.open_access = open_access
        self.ready = False
        serve = settings.serve
        self._queues: dict[str, ModelQueue] = {}
        self._queues_lock = threading.Lock()
        self.search_queue = ModelQueue("embedding", self._search_batch, serve.batch_size, serve.queue_depth)
        self.generators = offered_generators(settings)
        self.jobs = UploadJobs(self.engine, serve.queue_depth,
                               UploadSpool(Path(serve.upload_dir) if serve.upload_dir else None,
                                           int(serve.upload_spool_mb * 2**20)))
        self.metrics = Metrics(self._index_counts, self._queue_sizes)
        self.feedback = FeedbackStore(feedback_path(settings.index.path, serve.feedback_file), serve.feedback_hours)

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the models (the embedding model and every generator offered) and open the index
        before the first request, so /readyz means it and no request waits for a model load."""
        self.engine.embedder.warm_up()
        for name in self.generators:
            warm_up = getattr(self.engine.answerer(name).generator, "warm_up", None)
            if warm_up is not None:
                warm_up()
        if self.engine.store.exists():
            self.engine.reader()
        self.ready = True

    def close(self) -> None:
        self.ready = False
        self.search_queue.close()
        for queue in self._queues.values():
            queue.close()
        self.jobs.close()
        self.feedback.close()
        self.engine.close()

    def _index_counts(self) -> dict[str, int]:
        if not self.engine.store.exists():
            return {}
        try:
            return self.engine.reader().manifest.counts
        except RagError:
            return {}

    def _queue_sizes(self) -> dict[str, int]:
        return {"embedding": self.search_queue.waiting,
                **{f"generator:{name}": q.waiting for name, q in self._queues.items()}, "uploads": self.jobs.waiting}

    # -- searching and answering -------------------------------------------------------------

    def _search_batch(self, key: Hashable, questions: list[str]) -> list[tuple[list[Hit], dict[str, float]]]:
        k, filters, mode = key  # type: ignore[misc]
        timings: dict[str, float] = {}
        results = self.engine.search_many(questions, k, list(filters), mode, timings)
        share = {stage: seconds / len(questions) for stage, seconds in timings.items()}
        return [(hits, share) for hits in results]

    def _generation_queue(self, generator: str | None) -> ModelQueue:
        """The generator's queue: one batch at a time for a model in this process; for an
        OpenAI-compatible server, generate.openai_concurrency asks (streamed ones included) at
        once, since the server batches them itself. Only generators the server offers: a
        request must never make it load another model."""
        name = generator or self.settings.answer.generator
        if name not in self.generators:
            raise ConfigError(f"generator {name!r} is not offered by this server; choose one of "
                              f"{', '.join(self.generators)} (the operator lists them in serve.generators)")
        with self._queues_lock:
            if name not in self._queues:
                def run(key: Hashable, questions: list[str], name: str = name) -> list[Answer]:
                    k, filters, mode = key  # type: ignore[misc]
                    return self.engine.ask_many(questions, k, name, list(filters), mode)
                concurrency = self.settings.generate.openai_concurrency if name == "openai" else 0
                self._queues[name] = ModelQueue(f"generator:{name}", run, self.settings.serve.batch_size,
                                                self.settings.serve.queue_depth, concurrency)
            return self._queues[name]

    async def search(self, question: str, k: int | None, filters: list[str], mode: str | None) -> list[Hit]:
        hits, timings = await self._wait(self.search_queue, lambda q: q.submit((k, tuple(filters), mode), question))
        self.metrics.observe_stages(timings)
        return hits

    async def ask(self, question: str, k: int | None, generator: str | None, filters: list[str],
                  mode: str | None = None) -> Answer:
        queue = self._generation_queue(generator)
        return await self._wait(queue, lambda q: q.submit((k, tuple(filters), mode), question))

    async def ask_stream(self, question: str, k: int | None, generator: str | None,
                         filters: list[str], mode: str | None = None) -> AsyncIterator[Any]:
        """Engine.ask_stream's items (passages, text pieces, the Answer), produced on the model's
        thread and handed over as they come; stops generating when the client goes away."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        gone = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for item in self.engine.ask_stream(question, k, generator, filters, mode):  # type: ignore[arg-type]
                    loop.call_soon_threadsafe(items.put_nowait, item)
                    if gone.is_set():
                        return
            except Exception as exc:  # noqa: BLE001 - handed to the request
                loop.call_soon_threadsafe(items.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(items.put_nowait, done)

        queue = self._generation_queue(generator)
        try:
            future = queue.submit_call(produce)
        except QueueFull as exc:
            raise self._busy(queue, exc) from None
        try:
            while True:
                try:
                    item = await asyncio.wait_for(items.get(), self.settings.serve.timeout)
                except asyncio.TimeoutError:
                    raise self._timeout() from None
                if item is done:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            gone.set()
            future.cancel()

    async def _wait(self, queue: ModelQueue, submit: Callable[[ModelQueue], Future[Any]]) -> Any:
        try:
            future = submit(queue)
        except QueueFull as exc:
            raise self._busy(queue, exc) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.serve.timeout)
        except asyncio.TimeoutError:
            future.cancel()
            raise self._timeout() from None

    def _timeout(self) -> HTTPException:
        return HTTPException(504, f"no result within serve.timeout ({self.settings.serve.timeout:g} s); "
                                  "try again later or with a smaller k")

    def _busy(self, queue: ModelQueue, exc: QueueFull) -> HTTPException:
        log.warning("%s", exc)
        return HTTPException(503, f"the server is busy ({exc}); retry later",
                             headers={"Retry-After": str(queue.retry_after())})

    async def record(self, request: Request, answer: Answer, key: ApiKey | None, answer_id: str | None = None) -> str:
        """What every route does with a finished answer: count it (metrics), put its outcome (and
        its texts only when serve.log_questions allows: questions about people are personal data)
        in the request's access-log line, and keep it rateable for serve.feedback_hours, by any
        worker, under the id returned (a new one unless a stream chose it up front)."""
        self.metrics.observe_answer(answer)
        fields: dict[str, Any] = {"outcome": outcome(answer)}
        if self.settings.serve.log_questions:
            fields.update(question=answer.question, answer=answer.answer)
        request.state.log_fields = fields
        answer_id = answer_id or new_answer_id()
        try:  # a SQLite write: off the event loop
            await asyncio.to_thread(self.feedback.remember, answer_id, answer, key.key_id if key else None,
                                    key.name if key else None)
        except RagError as exc:  # the answer is still given; only rating it will fail
            log.error("answer %s cannot be rated: %s", answer_id, exc)
        return answer_id


def new_answer_id() -> str:
    return uuid.uuid4().hex


def offered_generators(settings: Settings) -> list[str]:
    """The generators requests may choose: answer.generator, then serve.generators (the
    model-free extractive one when that is empty)."""
    return list(dict.fromkeys([settings.answer.generator, *(settings.serve.generators or ["extractive"])]))


# An absolute path: a slash, then characters a path holds, up to a space, quote or bracket.
_PATH = re.compile(r"(?<![\w.~-])/[^\s'\"`,;()\[\]{}<>]+")


def without_server_paths(text: str) -> str:
    """The text with every absolute path on this machine (whose first folder exists here, so
    routes such as /v1/ask stay) replaced: error bodies must not map the server's disk."""
    def hide(match: re.Match[str]) -> str:
        first = match.group(0).lstrip("/").split("/", 1)[0]
        return "<a path on the server>" if first and os.path.isdir("/" + first) else match.group(0)
    return _PATH.sub(hide, text)


# -- access ---------------------------------------------------------------------------------


def access(service: Service, needed: Scope) -> Callable[[Request], ApiKey | None]:
    """A dependency: the request's key, when it has the scope (401/403 otherwise). With no key
    configured and open access (loopback), None: every document may be read."""
    def authorize(request: Request) -> ApiKey | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not service.keys.configured():
            if service.open_access:
                return None
            raise HTTPException(401, "this service has no keys yet; add one with `rag keys add NAME`")
        key = service.keys.verify(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise HTTPException(401, "a valid API key is required: send Authorization: Bearer KEY",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.key_name = key.name
        if not key.allows(needed):
            raise HTTPException(403, f"key {key.name!r} has scope {key.scope!r}; this route needs {needed!r}")
        return key
    return authorize


def key_filters(key: ApiKey | None, requested: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The key's filters and the request's: all must hold, so a key never sees past its own."""
    return [*(key.filters if key else ()), *requested]


def http_error(exc: RagError) -> HTTPException:
    """RagErrors are the user's to act on, except those about the index files, whose messages
    name paths on the server: those are logged, and the client gets a short reason."""
    if isinstance(exc, SpoolFull):
        return HTTPException(503, str(exc), headers={"Retry-After": "30"})
    if isinstance(exc, IndexLockedError):
        return HTTPException(503, "the index is being written by another process; retry when it is done",
                             headers={"Retry-After": "5"})
    if isinstance(exc, (IndexNotFoundError, IndexCorruptError, IndexMismatchError)):
        log.error("index unavailable: %s", exc)
        return HTTPException(503, "the index is not available; the server's log says why")
    return HTTPException(422 if isinstance(exc, ConfigError) else 400, without_server_paths(str(exc)))
