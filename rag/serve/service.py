"""What the routes share: the engine, keys, one queue per model, upload jobs and metrics.

The routes translate HTTP to these calls and back; nothing here knows about HTTP (a request it
cannot serve now raises Busy or TimedOut) nor about retrieval: it only schedules Engine calls so
that models are never run twice at once, and index writes one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from rag.citations import Answer
from rag.config import Settings
from rag.conversation import Turn
from rag.engine import Engine
from rag.errors import ConfigError, RagError
from rag.filters import Access
from rag.names import SearchMode
from rag.indexing import IndexReport
from rag.records import Hit
from rag.serve.audit import AuditLog, RequestAudit, audit_path
from rag.serve.batching import ModelQueue, QueueFull
from rag.serve.callers import Caller
from rag.serve.errors import Busy, TimedOut
from rag.serve.feedback import FeedbackStore, feedback_path
from rag.serve.jobs import UploadJobs
from rag.serve.keys import KeyStore, keys_path
from rag.serve.oidc import OidcVerifier
from rag.serve.metrics import Metrics, outcome
from rag.serve.schedule import Lease, Scheduler, SourceCollector
from rag.serve.spool import UploadSpool
from rag.sources.settings import SourceSettings

log = logging.getLogger(__name__)

# A question as queued: its text and its conversation's earlier turns.
Asking = tuple[str, tuple[Turn, ...]]
T = TypeVar("T")


class Service:
    def __init__(self, settings: Settings, open_access: bool, engine: Engine | None = None,
                 sources: Sequence[SourceSettings] = ()) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.keys = KeyStore(keys_path(settings.index.path, settings.serve.keys_file))
        # Signed-in people, when an identity provider is configured (checked when the app is made).
        self.oidc = OidcVerifier(settings.oidc) if settings.oidc.issuer else None
        self.open_access = open_access
        self.ready = False
        self.started = int(time.time())  # the `created` of the OpenAI-compatible model cards
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
        # Declared sources with a schedule, run by whichever server process takes their lease first.
        self.sources = list(sources)
        self.scheduler = Scheduler(self.sources, settings.index.path, self._run_source)
        self.metrics.registry.register(SourceCollector(self.sources, self.scheduler.state))
        # Who asked what, when (personal data: off unless serve.audit).
        self.audit = (RequestAudit(AuditLog(audit_path(settings.index.path, serve.audit_file), serve.audit_days))
                      if serve.audit else None)

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the models (the embedding model and every generator offered) and open the index
        before the first request, so /readyz means it and no request waits for a model load."""
        if self.audit is not None:
            self.audit.start()
        if self.oidc is not None:
            try:  # found now, so the first person signing in does not wait for it
                self.oidc.provider()
            except RagError as exc:  # the provider may come back: people get 503 until it does
                log.warning("identity provider: %s", exc)
        self.engine.embedder.warm_up()
        for name in self.generators:
            warm_up = getattr(self.engine.answerer(name).generator, "warm_up", None)
            if warm_up is not None:
                warm_up()
        if self.engine.store.exists():
            self.engine.reader()
        self.ready = True
        self.scheduler.start()

    def close(self) -> None:
        self.ready = False
        self.scheduler.close()
        self.search_queue.close()
        for queue in self._queues.values():
            queue.close()
        self.jobs.close()
        self.feedback.close()
        if self.audit is not None:
            self.audit.close()
        if self.oidc is not None:
            self.oidc.close()
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

    def _search_batch(self, key: Hashable, asked: list[Asking]) -> list[tuple[list[Hit], dict[str, float]]]:
        k, filters, mode, access = key  # type: ignore[misc]
        timings: dict[str, float] = {}
        questions, histories = [q for q, _ in asked], [list(h) for _, h in asked]
        results = self.engine.search_many(questions, k, list(filters), mode, timings, histories, access=access)
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
                def run(key: Hashable, asked: list[Asking], name: str = name) -> list[Answer]:
                    k, filters, mode, access = key  # type: ignore[misc]
                    return self.engine.ask_many([q for q, _ in asked], k, name, list(filters), mode,
                                                [list(h) for _, h in asked], access=access)
                concurrency = self.settings.generate.openai_concurrency if name == "openai" else 0
                self._queues[name] = ModelQueue(f"generator:{name}", run, self.settings.serve.batch_size,
                                                self.settings.serve.queue_depth, concurrency)
            return self._queues[name]

    async def search(self, question: str, k: int | None, filters: list[str], mode: SearchMode | None,
                     history: Sequence[Turn] = (), access: Access | None = None) -> list[Hit]:
        """Passages; a batch shares k, filters, mode and the person's access."""
        asked = (question, tuple(history))
        hits, timings = await self._wait(self.search_queue,
                                         lambda q: q.submit((k, tuple(filters), mode, access), asked))
        self.metrics.observe_stages(timings)
        return hits

    async def ask(self, question: str, k: int | None, generator: str | None, filters: list[str],
                  mode: SearchMode | None = None, history: Sequence[Turn] = (),
                  access: Access | None = None) -> Answer:
        queue = self._generation_queue(generator)
        asked = (question, tuple(history))
        return await self._wait(queue, lambda q: q.submit((k, tuple(filters), mode, access), asked))

    async def ask_stream(self, question: str, k: int | None, generator: str | None,
                         filters: list[str], mode: SearchMode | None = None,
                         history: Sequence[Turn] = (), access: Access | None = None) -> AsyncIterator[Any]:
        """Engine.ask_stream's items (what was searched with its passages, text pieces, the
        Answer), produced on the model's thread and handed over as they come; stops generating
        when the client goes away."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        gone = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for item in self.engine.ask_stream(question, k, generator, filters, mode,  # type: ignore[arg-type]
                                                   list(history), access=access):
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

    def _timeout(self) -> TimedOut:
        return TimedOut(self.settings.serve.timeout)

    def _busy(self, queue: ModelQueue, exc: QueueFull) -> Busy:
        log.warning("%s", exc)
        return Busy(f"the server is busy ({exc}); retry later", queue.retry_after())

    # -- writing -----------------------------------------------------------------------------

    async def write(self, call: Callable[[], T]) -> T:
        """A write (a delete), after this process's writes ahead of it and another process's
        write, waited for up to serve.timeout like any request; then Busy, nothing written."""
        timeout = self.settings.serve.timeout
        future = self.jobs.write(call, time.monotonic() + timeout)
        result = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(result), timeout)
        except asyncio.TimeoutError:
            if future.cancel():
                raise Busy("other writes to the index are ahead of this one; nothing was deleted, retry later",
                           retry_after=5) from None
            # Started: its wait for another process's lock ends at the same deadline.
            return await result

    def _run_source(self, declared: SourceSettings, lease: Lease) -> None:
        """A due source's run, as a job on the index's one writing thread; the lease is held until it ends."""
        def run() -> IndexReport:
            try:
                report = self.engine.index_source(declared).report
            except RagError:
                self.metrics.source_runs.labels(declared.name, "failed").inc()
                raise
            finally:
                lease.release()
            self.metrics.source_runs.labels(declared.name, "failed" if report.failed else "ok").inc()
            for change, count in (("added", report.added), ("updated", report.updated), ("deleted", report.deleted)):
                self.metrics.source_documents.labels(declared.name, change).inc(count)
            return report
        self.jobs.submit_run(declared.target, f"source {declared.name}", run)

    # -- answers given -----------------------------------------------------------------------

    def log_fields(self, answer: Answer) -> dict[str, str]:
        """What the request's access-log line tells of an answer: its outcome, and its texts only
        when serve.log_questions allows (questions about people are personal data)."""
        fields = {"outcome": outcome(answer)}
        if self.settings.serve.log_questions:
            fields.update(question=answer.question, answer=answer.answer)
        return fields

    async def record(self, answer: Answer, caller: Caller, answer_id: str | None = None) -> str:
        """What every route does with a finished answer: count it (metrics) and keep it rateable
        for serve.feedback_hours, by any worker, under the id returned (a new one unless a stream
        chose it up front)."""
        self.metrics.observe_answer(answer)
        answer_id = answer_id or new_answer_id()
        try:  # a SQLite write: off the event loop
            await asyncio.to_thread(self.feedback.remember, answer_id, answer, caller.owner, caller.name)
        except RagError as exc:  # the answer is still given; only rating it will fail
            log.error("answer %s cannot be rated: %s", answer_id, exc)
        return answer_id


def new_answer_id() -> str:
    return uuid.uuid4().hex


def offered_generators(settings: Settings) -> list[str]:
    """The generators requests may choose: answer.generator, then serve.generators (the
    model-free extractive one when that is empty)."""
    return list(dict.fromkeys([settings.answer.generator, *(settings.serve.generators or ["extractive"])]))
