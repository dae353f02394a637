"""`rag serve` runs the declared sources' schedules itself (`[[sources]]` with `every`).

Every server process (each of --workers, and other servers on the same index) looks every few
seconds for a source that is due (its last run, recorded in sources.sqlite, ended `every` ago).
A run is taken only under that source's lease, an exclusive flock() on `<index>/source-NAME.lock`
held for the whole run, and the last run is read again once the lease is held: so one source is
never run twice at once, nor twice for one due time, whichever process sees it first. The run is
an upload-style job (GET /v1/jobs lists it), on the one thread that writes the index.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rag.errors import RagError
from rag.sources.settings import SourceSettings
from rag.sources.state import SourceState

log = logging.getLogger(__name__)
TICK_SECONDS = 5.0


class Lease:
    """An exclusive, non-blocking flock() on one source's lock file; released when closed (or when
    its process dies, which the kernel does for it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def take(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_due(declared: SourceSettings, state: SourceState, now: float) -> bool:
    last = state.last(declared.name)
    due = declared.next_run(last.finished if last else None, now)
    return due is not None and due <= now


class Scheduler:
    """Looks for due sources every TICK_SECONDS and hands each to `submit(declared, lease)`, which
    must release the lease when the run ends."""

    def __init__(self, sources: list[SourceSettings], index_path: Path,
                 submit: Callable[[SourceSettings, Lease], None], tick: float = TICK_SECONDS) -> None:
        self.sources = [s for s in sources if s.scheduled]
        self.index_path = Path(index_path)
        self.state = SourceState(self.index_path)
        self.submit = submit
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.sources and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="rag-sources", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            for declared in self.sources:
                try:
                    self.consider(declared)
                except (OSError, RagError) as exc:  # the next tick tries again
                    log.error("source %s: %s", declared.name, exc)

    def consider(self, declared: SourceSettings) -> bool:
        """Start a run of the source when it is due and its lease is free; whether one started."""
        if not is_due(declared, self.state, time.time()):
            return False
        self.index_path.mkdir(parents=True, exist_ok=True)
        lease = Lease(self.index_path / f"source-{declared.name}.lock")
        if not lease.take():
            return False  # another process runs it now
        if not is_due(declared, self.state, time.time()):  # it ran while we looked
            lease.release()
            return False
        try:
            self.submit(declared, lease)
        except Exception:
            lease.release()
            raise
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class SourceCollector(Collector):
    """rag_source_last_success_timestamp_seconds{source}, read from sources.sqlite at each scrape
    (every process sees every process's runs there)."""

    def __init__(self, sources: list[SourceSettings], state: SourceState) -> None:
        self.sources = sources
        self.state = state

    def collect(self):  # type: ignore[no-untyped-def]  # prometheus_client's Collector signature
        family = GaugeMetricFamily("rag_source_last_success_timestamp_seconds",
                                   "When each source's last successful run ended (epoch seconds)", labels=["source"])
        for declared in self.sources:
            last = self.state.last(declared.name, ok_only=True)
            if last is not None:
                family.add_metric([declared.name], last.finished)
        yield family
