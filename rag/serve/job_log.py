"""Upload jobs written down where every server process on the index can read them.

A client posts an upload to one process and polls `/v1/jobs/ID`, which a load balancer (or
`rag serve --workers N`) may send to another: the job's state lives in `jobs.sqlite` beside
`keys.sqlite` in the index folder, outside its versions, written by the process that runs it.
Each job names that process; a job still queued or running whose process is gone from this
machine (killed, crashed) is reported failed, since nothing will ever finish it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOBS_FILE = "jobs.sqlite"
_OWNER = "_owner"  # the recorded job's process: {"host", "pid", "started"}
_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS jobs (
    id       TEXT PRIMARY KEY,
    job      TEXT NOT NULL,     -- the Job's fields as JSON
    finished REAL              -- seconds since the epoch; NULL while queued or running
);
CREATE INDEX IF NOT EXISTS jobs_by_finish ON jobs(finished);
"""


class JobLog:
    """The jobs of every process serving one index folder; a process that cannot write here
    (a read-only folder) keeps its jobs to itself and says so once."""

    def __init__(self, path: Path, keep: int) -> None:
        self.path = Path(path)
        self.keep = keep
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            log.warning("upload jobs are known only to the process that accepted them: %s: %s", self.path, exc)
            self._conn = None

    def record(self, job_id: str, job: dict[str, Any], finished: float | None) -> None:
        """Write a job's current fields, as this process's; the oldest finished jobs beyond
        `keep` are dropped."""
        self._write(job_id, {**job, _OWNER: _this_process()}, finished)

    def _write(self, job_id: str, job: dict[str, Any], finished: float | None) -> None:
        if self._conn is None:
            return
        with self._lock:
            try:
                with self._conn:
                    self._conn.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)",
                                       (job_id, json.dumps(job, ensure_ascii=False), finished))
                    if finished is not None:
                        self._conn.execute(
                            "DELETE FROM jobs WHERE finished IS NOT NULL AND id NOT IN (SELECT id FROM jobs WHERE "
                            "finished IS NOT NULL ORDER BY finished DESC LIMIT ?)", (self.keep,))
            except sqlite3.Error as exc:  # the job itself goes on; only other processes lose sight of it
                log.warning("cannot record upload job %s in %s: %s", job_id, self.path, exc)

    def find(self, job_id: str) -> dict[str, Any] | None:
        """The fields a process last recorded for the job, or None."""
        if self._conn is None:
            return None
        with self._lock:
            try:
                row = self._conn.execute("SELECT job FROM jobs WHERE id = ?", (job_id,)).fetchone()
            except sqlite3.Error as exc:
                log.warning("cannot read upload job %s from %s: %s", job_id, self.path, exc)
                return None
        if row is None:
            return None
        job = json.loads(row[0])
        owner = job.pop(_OWNER, None)
        if job.get("state") in ("queued", "running") and owner is not None and not _alive(owner):
            job.update(state="failed", finished=time.time(),
                       error=f"the server process that was indexing this upload (pid {owner['pid']}) stopped "
                             "before it finished; nothing of it was indexed: upload again")
            self._write(job_id, job, job["finished"])
        return job

    def recent(self, limit: int = 100) -> list[str]:
        """The ids of the latest jobs every process recorded, unfinished first, then newest."""
        if self._conn is None:
            return []
        with self._lock:
            try:
                rows = self._conn.execute("SELECT id FROM jobs ORDER BY finished IS NOT NULL, finished DESC, rowid DESC "
                                          "LIMIT ?", (limit,)).fetchall()
            except sqlite3.Error as exc:
                log.warning("cannot list upload jobs in %s: %s", self.path, exc)
                return []
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def process_started(pid: int) -> int | None:
    """When the process started (clock ticks after boot, Linux), so a reused pid is told apart."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, started: int | None) -> bool:
    """Whether that process of this machine still runs (unknown counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return started is None or process_started(pid) in (None, started)


def _this_process() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": process_started(os.getpid())}


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the job's process still runs; a process on another machine is assumed to."""
    if owner.get("host") != socket.gethostname():
        return True
    try:
        return process_alive(int(owner["pid"]), owner.get("started"))
    except (KeyError, ValueError, TypeError):
        return True
