"""Uploads indexed in the background, one job at a time (an index has one writer).

Other processes may write the same index (other workers, other `rag serve` processes, a
`rag index`): a write that finds the index's lock held waits for it, re-trying, for a bounded
time. A write takes the lock before it reads or embeds anything, so a retry repeats no work.

An uploaded file is written to a private temporary folder under a sanitised name and indexed
from there with the origin "upload", so a later upload of the same name replaces it while a
document of the same id indexed from a folder is refused, never replaced. Nothing indexed is
lost when a job fails: its version is never committed.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from rag.engine import Engine
from rag.errors import IndexLockedError, RagError
from rag.indexing import IndexReport
from rag.serve.job_log import JOBS_FILE, JobLog
from rag.records import Acl
from rag.serve.callers import Caller
from rag.serve.spool import UploadSpool

log = logging.getLogger(__name__)

UPLOAD_ORIGIN = "upload"
_KEPT_JOBS = 1000  # finished jobs whose state can still be asked for
# How long an accepted upload waits for another process's write to end before it fails. Its
# client was answered 202 and polls, so it may wait long; deletes wait serve.timeout instead.
UPLOAD_LOCK_WAIT = 600.0
_FIRST_PAUSE, _LONGEST_PAUSE = 0.05, 1.0  # between tries of the lock

T = TypeVar("T")
State = Literal["queued", "running", "done", "failed"]


def safe_upload_name(name: str) -> str:
    """A file name that cannot leave its folder or hide: the last path component, without
    control characters, leading dots or characters shells and file systems dislike."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", name or ""))[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    base = re.sub(r'[<>:"|?*]', "_", base).strip().lstrip(".").strip()
    if len(base) > 200:
        stem, dot, suffix = base.rpartition(".")
        base = (stem[: 200 - len(suffix) - 1] + dot + suffix) if dot and len(suffix) <= 16 else base[:200]
    return base


def _without_paths(value: Any, folder: Path) -> Any:
    """The report or message with the temporary folder's path taken out of it (clients see the
    uploaded file's name, never a path on the server)."""
    if isinstance(value, str):
        for prefix in {str(folder.resolve()), str(folder)}:
            value = value.replace(prefix + "/", "").replace(prefix, "upload")
        return value
    if isinstance(value, dict):
        return {k: _without_paths(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_paths(v, folder) for v in value]
    return value


@dataclass
class Job:
    id: str
    collection: str
    key_name: str | None  # for people reading logs; ownership goes by key_id
    files: list[str]
    state: State = "queued"
    created: float = field(default_factory=time.time)
    finished: float | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    # Who made it (Caller.owner: the key's id, and the person it acted for; a new key may reuse a
    # revoked key's name); None in open mode.
    key_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        report = self.report or {}
        return {"id": self.id, "state": self.state, "collection": self.collection, "files": self.files,
                "created": self.created, "finished": self.finished,
                "counts": {k: report.get(k, 0) for k in ("documents", "added", "updated", "unchanged", "chunks",
                                                          "skipped", "failed")},
                "problems": report.get("problems", []), "error": self.error}


def _job(collection: str, caller: Caller, files: list[str]) -> Job:
    return Job(uuid.uuid4().hex, collection, caller.name, files, key_id=caller.owner)


class UploadJobs:
    def __init__(self, engine: Engine, max_waiting: int, spool: UploadSpool) -> None:
        self.engine = engine
        self._max_waiting = max_waiting
        self.spool = spool
        # Where other processes on the index read this one's jobs (and it reads theirs).
        self._log = JobLog(engine.store.path / JOBS_FILE, _KEPT_JOBS)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-upload")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()  # ends waits for the index lock when the server stops
        self.on_finish: list[Any] = []  # callables taking the finished Job (metrics)

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(job.state == "queued" for job in self._jobs.values())

    def new_folder(self) -> Path:
        """A private folder for one upload's files (removed when its job ends)."""
        return self.spool.new_folder()

    def submit_files(self, folder: Path, collection: str, caller: Caller, acl: Acl | None = None) -> Job:
        """`acl`: the list the request gave every file's documents (None: the collection's default)."""
        files = sorted(p.name for p in folder.iterdir())
        return self._submit(_job(collection, caller, files), folder,
                            lambda: self.engine.index([folder], collection=collection, origin=UPLOAD_ORIGIN, acl=acl))

    def submit_records(self, folder: Path, records_file: Path, count: int, collection: str,
                       caller: Caller) -> Job:
        """Records get the uploads' origin too: they replace earlier uploads of their ids, are
        refused where an operator's `rag index --jsonl` stream put that id (and the reverse),
        and a stream's `--sync` never removes them."""
        job = _job(collection, caller, [f"{count} records"])

        def run() -> IndexReport:
            with records_file.open("rb") as stream:
                return self.engine.index_jsonl(stream, f"upload {job.id}", total_bytes=records_file.stat().st_size,
                                               collection=collection, origin=UPLOAD_ORIGIN)
        return self._submit(job, folder, run)

    def submit_run(self, collection: str, what: str, run: Callable[[], IndexReport]) -> Job:
        """A write the server starts itself (a source's scheduled run): a job of no key, which
        admin keys see."""
        job = Job(uuid.uuid4().hex, collection, "scheduler", [what], key_id="scheduler")
        return self._submit(job, self.spool.new_folder(), run)

    def _submit(self, job: Job, folder: Path, run: Any) -> Job:
        with self._lock:
            if sum(j.state == "queued" for j in self._jobs.values()) >= self._max_waiting:
                shutil.rmtree(folder, ignore_errors=True)
                raise RagError(f"{self._max_waiting} uploads already wait to be indexed; retry later")
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.finished is not None]
            for old in sorted(finished, key=lambda j: j.finished or 0)[: max(0, len(finished) - _KEPT_JOBS)]:
                del self._jobs[old.id]
        self._record(job)
        self._executor.submit(self._run, job, folder, run)
        return job

    def _record(self, job: Job) -> None:
        self._log.record(job.id, asdict(job), job.finished)

    def _run(self, job: Job, folder: Path, run: Any) -> None:
        job.state = "running"
        self._record(job)
        try:
            report: IndexReport = self._when_unlocked(run, time.monotonic() + UPLOAD_LOCK_WAIT)
            job.report = {**_without_paths(report.as_dict(), folder), "index": None}
            job.state = "done"
        except IndexLockedError:
            why = ("the server stopped while another process was writing the index" if self._closing.is_set()
                   else f"another process kept writing the index for over {UPLOAD_LOCK_WAIT:g} s")
            job.error, job.state = f"{why}; nothing was indexed: upload again later", "failed"
        except RagError as exc:
            job.error, job.state = _without_paths(str(exc), folder), "failed"
        except Exception:  # noqa: BLE001 - the job reports it; the log keeps the details
            log.exception("upload job %s failed", job.id)
            job.error, job.state = "internal error while indexing; the server's log has the details", "failed"
        finally:
            job.finished = time.time()
            self._record(job)
            shutil.rmtree(folder, ignore_errors=True)
            for callback in self.on_finish:
                callback(job)

    def write(self, call: Callable[[], T], deadline: float) -> Future[T]:
        """Run another write (a delete) on the same thread as the jobs, so that this process's
        writes never meet at the index's lock; another process's write is waited for until
        `deadline` (time.monotonic()), then IndexLockedError."""
        return self._executor.submit(self._when_unlocked, call, deadline)

    def _when_unlocked(self, call: Callable[[], T], deadline: float) -> T:
        """`call`, tried again while another process holds the index's write lock, until the
        deadline or the server stops; then that process's IndexLockedError."""
        pause = _FIRST_PAUSE
        while True:
            try:
                return call()
            except IndexLockedError:
                left = deadline - time.monotonic()
                if left <= 0 or self._closing.wait(min(pause, left)):
                    raise
                pause = min(pause * 2, _LONGEST_PAUSE)

    def get(self, job_id: str) -> Job | None:
        """A job this process runs, or one another process on the index wrote down."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            recorded = self._log.find(job_id)
            job = Job(**recorded) if recorded is not None else None
        return job

    def recent(self, limit: int = 100) -> list[Job]:
        """The latest jobs of every process on the index (uploads and sources' runs)."""
        return [job for job in (self.get(job_id) for job_id in self._log.recent(limit)) if job is not None]

    def close(self) -> None:
        self._closing.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            never_run = [job for job in self._jobs.values() if job.state == "queued"]
        for job in never_run:  # cancelled: told so, not left queued for other processes to poll
            job.state, job.finished = "failed", time.time()
            job.error = "the server stopped before indexing this upload; nothing of it was indexed: upload again"
            self._record(job)
        self._log.close()
