"""Seconds per stage, for reports (`rag index --json`'s stages, an answer's timings, /v1/stats)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class StageClock:
    """Adds up the seconds spent in each stage into `stages`: `with clock("embed"): ...`, or
    `clock.iterate(items, "parse")` for the time a generator spends producing its items."""

    def __init__(self, stages: dict[str, float] | None = None) -> None:
        self.stages = stages if stages is not None else {}
        self.started = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - started

    def iterate(self, items: Iterable[T], stage: str) -> Iterator[T]:
        """Yields what `items` yields, counting the time spent producing each item."""
        items = iter(items)
        done = object()
        while True:
            with self(stage):
                item = next(items, done)
            if item is done:
                return
            yield item  # type: ignore[misc]

    def elapsed(self) -> float:
        """Seconds since the clock was made (a whole request's, for `total` and `first_token`)."""
        return time.perf_counter() - self.started
