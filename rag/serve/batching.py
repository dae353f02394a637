"""One worker thread per model, fed by a bounded queue, serving waiting requests in batches.

Why: torch and FAISS each want every core. Requests run side by side in a thread pool make
their thread pools fight (one busy neighbour turned a 22 ms query into 523 ms); one thread per
model never runs two copies of a model at once, and requests that wait together with the same
parameters go into one batched model call, which costs little more than one.

A model on another machine (an OpenAI-compatible server such as vLLM) is the exception: it
batches what it is sent at once itself, so its queue runs up to `concurrency` items at a time,
on as many threads, still batching waiting items of equal key up to the free slots.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests wait for this model than `serve.queue_depth` allows."""


@dataclass
class _Job:
    key: Hashable | None  # None: a call run alone (a streamed answer)
    item: Any
    future: Future[Any] = field(default_factory=Future)


class ModelQueue:
    """Runs `run_batch(key, items) -> results` for waiting items of equal key: on one thread,
    one batch at a time (concurrency 0, a model in this process), or with up to `concurrency`
    items running at once over as many threads (a model served elsewhere)."""

    def __init__(self, name: str, run_batch: Callable[[Hashable, list[Any]], list[Any]], max_batch: int,
                 max_waiting: int, concurrency: int = 0) -> None:
        if concurrency < 0:
            raise ValueError(f"the {name} queue's concurrency must be 0 (one batch at a time) or more")
        self.name = name
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_waiting = max_waiting
        # Items that may run at once; with one thread that is simply one whole batch.
        self._slots = concurrency or max_batch
        self._running = 0
        self._jobs: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._batch_seconds = 1.0  # a moving average, for telling clients when to retry
        self._threads = [threading.Thread(target=self._work, name=f"rag-{name}", daemon=True)
                         for _ in range(max(concurrency, 1))]
        for thread in self._threads:
            thread.start()

    @property
    def waiting(self) -> int:
        """Items queued and not yet taken by a worker (those running are not counted)."""
        return len(self._jobs)

    @property
    def running(self) -> int:
        """Items taken by a worker and not yet finished."""
        return self._running

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained, for a 503's Retry-After."""
        return max(1, math.ceil(self._batch_seconds * (len(self._jobs) / self._slots + 1)))

    def submit(self, key: Hashable, item: Any) -> Future[Any]:
        """Queue one item for a batch of its key; raises QueueFull when the queue is full."""
        return self._put(_Job(key, item))

    def submit_call(self, call: Callable[[], Any]) -> Future[Any]:
        """Queue a call that runs alone on the model's thread (a streamed answer)."""
        return self._put(_Job(None, call))

    def _put(self, job: _Job) -> Future[Any]:
        with self._ready:
            if self._closed:
                raise QueueFull(f"the {self.name} queue is closed")
            if len(self._jobs) >= self._max_waiting:
                raise QueueFull(f"{len(self._jobs)} requests already wait for the {self.name} model")
            self._jobs.append(job)
            self._ready.notify()
        return job.future

    def _next_batch(self) -> list[_Job] | None:
        """The next batch, once a slot is free; it holds len(batch) slots until _release."""
        with self._ready:
            while not (self._jobs and self._running < self._slots):
                if self._closed and not self._jobs:
                    return None
                self._ready.wait()
            first = self._jobs.popleft()
            batch = [first]
            if first.key is not None:
                room = min(self._max_batch, self._slots - self._running)
                for job in list(self._jobs):
                    if len(batch) >= room:
                        break
                    if job.key == first.key:
                        self._jobs.remove(job)
                        batch.append(job)
            self._running += len(batch)
            return batch

    def _release(self, count: int) -> None:
        with self._ready:
            self._running -= count
            self._ready.notify_all()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._run(batch)
            finally:
                self._release(len(batch))

    def _run(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        started = time.perf_counter()
        if batch[0].key is None:
            _settle(batch[0], batch[0].item)
            return
        try:
            results = self._run_batch(batch[0].key, [job.item for job in batch])
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - one bad item must not fail the others
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            for job in batch:  # find out which item failed: each alone
                _settle(job, lambda job=job: self._run_batch(job.key, [job.item])[0])
            return
        for job, result in zip(batch, results):
            job.future.set_result(result)

    def close(self) -> None:
        """Stop taking work; what is queued still runs."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)


def _settle(job: _Job, call: Callable[[], Any]) -> None:
    try:
        job.future.set_result(call())
    except Exception as exc:  # noqa: BLE001 - delivered to the request that made it
        job.future.set_exception(exc)
