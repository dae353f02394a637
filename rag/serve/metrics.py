"""What the service measures: Prometheus metrics (base units, `rag_` prefix) and the recent
latencies `GET /v1/stats` reports as percentiles.

Each app has its own registry, so several apps in one process (tests) never share counters.
In Prometheus multi-process mode (PROMETHEUS_MULTIPROC_DIR names a folder when the process
starts, as `rag serve --workers N` arranges for its workers) every process writes its counters
and histograms to its own files there, and /metrics on any process reports the sums over all of
them; a process then serves one app, since same-named metrics of one process share a file.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rag.citations import Answer
from rag.errors import ConfigError
from rag.evaluate.metrics import percentile

# From a 10 ms search to a minute-long generation.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_RECENT = 2048  # latencies kept per route and stage for the percentiles of /v1/stats
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often a process of a multi-process server publishes its queue lengths for the others' /metrics.
_QUEUE_SAMPLE_SECONDS = 1.0
_QUEUE_HELP = "Requests waiting per model queue (and uploads waiting to be indexed)"


def outcome(answer: Answer) -> str:
    """answered, abstained ("I don't know") or ungrounded (cited nothing it was given)."""
    return "abstained" if answer.abstained else "answered" if answer.grounded else "ungrounded"


def multiprocess_dir() -> Path | None:
    """The folder of Prometheus multi-process mode when this process runs in it, None otherwise;
    a ConfigError when the setting cannot work, before any metric is written."""
    value = os.environ.get(MULTIPROC_ENV)
    if value is None:
        return None
    if values.ValueClass is values.MutexValue:
        raise ConfigError(f"{MULTIPROC_ENV} was set after prometheus_client was imported; set it before the "
                          "process starts")
    return _folder(value)


def _folder(value: str) -> Path:
    if not value or not Path(value).is_dir():
        raise ConfigError(f"{MULTIPROC_ENV}={value} is not a folder: create it (empty) or unset it")
    return Path(value)


@contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """For `rag serve --workers N`: the folder every worker's metrics meet in, exported to the
    workers through the environment. The user's PROMETHEUS_MULTIPROC_DIR when set (e.g. shared
    with other `rag serve` processes); otherwise a new empty folder, removed when the block ends,
    so no count of an earlier run is ever added to this one's."""
    given = os.environ.get(MULTIPROC_ENV)
    if given is not None:
        yield _folder(given)
        return
    with tempfile.TemporaryDirectory(prefix="rag-metrics-") as folder:
        os.environ[MULTIPROC_ENV] = folder
        try:
            yield Path(folder)
        finally:
            os.environ.pop(MULTIPROC_ENV, None)


class _IndexCollector(Collector):
    """rag_index_documents and rag_index_chunks of the live version, read at each scrape: every
    process serves the same index folder, so the scraped one's count is everyone's."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._counts()
        yield GaugeMetricFamily("rag_index_documents", "Documents in the live index version",
                                value=counts.get("documents", 0))
        yield GaugeMetricFamily("rag_index_chunks", "Chunks (passages) in the live index version",
                                value=counts.get("chunks", 0))


class _QueueCollector(Collector):
    """rag_queue_waiting{queue}: requests waiting per model queue, read at each scrape."""

    def __init__(self, sizes: Callable[[], dict[str, int]]) -> None:
        self._sizes = sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("rag_queue_waiting", _QUEUE_HELP, labels=["queue"])
        for name, waiting in self._sizes().items():
            family.add_metric([name], waiting)
        yield family


class Metrics:
    def __init__(self, index_counts: Callable[[], dict[str, int]], queue_sizes: Callable[[], dict[str, int]]) -> None:
        self.folder = multiprocess_dir()
        # What /metrics reports: this app's metrics, or in multi-process mode every process's files.
        self.registry = CollectorRegistry()
        if self.folder is not None:
            multiprocess.MultiProcessCollector(self.registry, path=str(self.folder))
        r = None if self.folder is not None else self.registry
        self.requests = Counter("rag_http_requests", "HTTP requests by route, method and status code",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("rag_http_request_duration_seconds", "Time to answer an HTTP request "
                                 "(to the last byte for streamed answers)", ["route", "method"], buckets=_BUCKETS,
                                 registry=r)
        self.stages = Histogram("rag_stage_duration_seconds", "Time spent per pipeline stage: embed, search, "
                                "bm25, fuse, rerank, prompt, generation, first_token", ["stage"], buckets=_BUCKETS,
                                registry=r)
        self.answers = Counter("rag_answers", "Answers by outcome: answered, abstained, ungrounded",
                               ["outcome"], registry=r)
        self.tokens = Counter("rag_generated_tokens", "Tokens through the generator, prompt or completion",
                              ["kind"], registry=r)
        self.jobs = Counter("rag_upload_jobs", "Finished upload jobs by final state", ["state"], registry=r)
        self.source_runs = Counter("rag_source_runs", "Scheduled source runs by outcome (ok, failed)",
                                   ["source", "outcome"], registry=r)
        self.source_documents = Counter("rag_source_documents", "Documents source runs added, updated or deleted",
                                        ["source", "change"], registry=r)
        self.registry.register(_IndexCollector(index_counts))
        self._queue_sizes = queue_sizes
        # Queue lengths are this process's alone: in multi-process mode each process publishes
        # its own to a gauge summed over the live processes (a stopped one's file is removed).
        self._queues: Gauge | None = None
        if self.folder is None:
            self.registry.register(_QueueCollector(queue_sizes))
        else:
            self._queues = Gauge("rag_queue_waiting", _QUEUE_HELP, ["queue"], multiprocess_mode="livesum",
                                 registry=None)
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """In multi-process mode, publish this process's queue lengths every second."""
        if self._queues is not None and self._sampler is None:
            self._sampler = threading.Thread(target=self._sample_queues, name="rag-metrics", daemon=True)
            self._sampler.start()

    def close(self) -> None:
        """Stop publishing; in multi-process mode remove this process's live gauges
        (`multiprocess.mark_process_dead`), so a stopped worker's queue no longer counts."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
            self._sampler = None
        if self.folder is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.folder))

    def _sample_queues(self) -> None:
        while not self._stop.wait(_QUEUE_SAMPLE_SECONDS):
            self._publish_queues()

    def _publish_queues(self) -> None:
        if self._queues is not None:
            for name, waiting in self._queue_sizes().items():
                self._queues.labels(name).set(waiting)

    def _remember(self, kind: str, name: str, seconds: float) -> None:
        with self._lock:
            self._recent.setdefault((kind, name), deque(maxlen=_RECENT)).append(seconds)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
        self._remember("route", f"{method} {route}", seconds)
        with self._lock:
            self._counts[str(status)] = self._counts.get(str(status), 0) + 1

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            if stage != "total":
                self.stages.labels(stage).observe(seconds)
                self._remember("stage", stage, seconds)

    def observe_answer(self, answer: Answer) -> None:
        self.observe_stages(answer.timings)
        self.answers.labels(outcome(answer)).inc()
        for kind in ("prompt", "completion"):
            if answer.tokens.get(kind):
                self.tokens.labels(kind).inc(answer.tokens[kind])

    def exposition(self) -> bytes:
        self._publish_queues()  # this process's own, current; the others' are a second old at most
        return generate_latest(self.registry)

    def summary(self) -> dict[str, Any]:
        """Request counts by status and p50/p95/p99 seconds of recent requests and stages. In
        multi-process mode the counts and queue lengths are every process's (as /metrics reports
        them), the percentiles this process's own recent requests: `scope` says which is which."""
        with self._lock:
            recent = {key: list(samples) for key, samples in self._recent.items()}
            counts = dict(self._counts)
        latency: dict[str, dict[str, dict[str, float]]] = {"routes": {}, "stages": {}}
        for (kind, name), samples in sorted(recent.items()):
            latency["routes" if kind == "route" else "stages"][name] = {
                "count": len(samples), **{f"p{q}": round(percentile(samples, q), 4) for q in (50, 95, 99)}}
        queues = self._queue_sizes()
        shared = "this process"
        if self.folder is not None:
            self._publish_queues()
            counts, queues = self._every_process()
            shared = "every process"
        return {"requests": {"total": sum(counts.values()), "by_status": counts}, "latency_seconds": latency,
                "queues": queues,
                "scope": {"requests": shared, "queues": shared, "latency_seconds": "this process", "pid": os.getpid()}}

    def _every_process(self) -> tuple[dict[str, int], dict[str, int]]:
        """Requests by status and queue lengths summed over every process's metrics files."""
        counts: dict[str, int] = {}
        queues: dict[str, int] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == "rag_http_requests_total":
                    status = sample.labels["status"]
                    counts[status] = counts.get(status, 0) + int(sample.value)
                elif sample.name == "rag_queue_waiting":
                    queues[sample.labels["queue"]] = queues.get(sample.labels["queue"], 0) + int(sample.value)
        return counts, queues
