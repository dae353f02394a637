"""What the service measures: Prometheus metrics (base units, `rag_` prefix) and the recent
latencies `GET /v1/stats` reports as percentiles.

Each app has its own registry, so several apps in one process (tests) never share counters.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rag.answer import Answer
from rag.evaluate.metrics import percentile

# From a 10 ms search to a minute-long generation.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_RECENT = 2048  # latencies kept per route and stage for the percentiles of /v1/stats


def outcome(answer: Answer) -> str:
    """answered, abstained ("I don't know") or ungrounded (cited nothing it was given)."""
    return "abstained" if answer.abstained else "answered" if answer.grounded else "ungrounded"


class _QueueCollector(Collector):
    """rag_queue_waiting{queue}: requests waiting per model queue, read at each scrape."""

    def __init__(self, sizes: Callable[[], dict[str, int]]) -> None:
        self._sizes = sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("rag_queue_waiting", "Requests waiting per model queue (and uploads waiting "
                                   "to be indexed)", labels=["queue"])
        for name, waiting in self._sizes().items():
            family.add_metric([name], waiting)
        yield family


class Metrics:
    def __init__(self, index_counts: Callable[[], dict[str, int]], queue_sizes: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        documents = Gauge("rag_index_documents", "Documents in the live index version", registry=r)
        chunks = Gauge("rag_index_chunks", "Chunks (passages) in the live index version", registry=r)
        documents.set_function(lambda: index_counts().get("documents", 0))
        chunks.set_function(lambda: index_counts().get("chunks", 0))
        self._queue_sizes = queue_sizes
        r.register(_QueueCollector(queue_sizes))
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

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
        return generate_latest(self.registry)

    def summary(self) -> dict[str, Any]:
        """Request counts by status and p50/p95/p99 seconds of recent requests and stages."""
        with self._lock:
            recent = {key: list(values) for key, values in self._recent.items()}
            counts = dict(self._counts)
        latency: dict[str, dict[str, dict[str, float]]] = {"routes": {}, "stages": {}}
        for (kind, name), values in sorted(recent.items()):
            latency["routes" if kind == "route" else "stages"][name] = {
                "count": len(values), **{f"p{q}": round(percentile(values, q), 4) for q in (50, 95, 99)}}
        return {"requests": {"total": sum(counts.values()), "by_status": counts}, "latency_seconds": latency,
                "queues": self._queue_sizes()}
