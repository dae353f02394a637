"""The audit log (`serve.audit`): one record per request of who asked what and when, so that an
administrator can answer "who read the HR files last month?" (`rag audit export`).

It is personal data: it keeps the user and groups, the key's name (never the key), the route, the
question, the ids of the documents cited or returned, the status and the client's address. So it
is off by default, lives in its own file, readable by its owner only (`audit.sqlite` in the index
folder beside keys.sqlite and feedback.sqlite, or `serve.audit_file`), and keeps a record for
`serve.audit_days` only: each process prunes older ones when it first writes and then every few
minutes, and an export never shows them even when no server has pruned them yet.

Every server process writes to the one file through its own connection (SQLite's WAL lets them
take turns without readers waiting); a record is one small insert, not synced to disk at once, so
a power cut may lose the last few.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rag.errors import RagError
from rag.serve.private_sqlite import open_private

_log = logging.getLogger(__name__)
AUDIT_FILE = "audit.sqlite"
_VERSION = 1
_PRUNE_EVERY = 600.0  # seconds between two prunings by one process
_SCHEMA = f"""
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS audit (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,           -- UTC, 2026-01-31T09:00:00.000000Z: sorts as it reads
    request_id TEXT NOT NULL,
    key_name   TEXT,                    -- the key's name (NULL: open access or none); never the key
    user       TEXT,
    groups     TEXT NOT NULL,           -- JSON list
    method     TEXT NOT NULL,
    route      TEXT NOT NULL,           -- the path, e.g. /v1/ask
    status     INTEGER NOT NULL,
    question   TEXT,
    cited      TEXT NOT NULL,           -- JSON list of collection/doc_id, documents cited or returned
    client     TEXT                     -- the client's address
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit(at);
PRAGMA user_version = {_VERSION};
"""


@dataclass(frozen=True)
class AuditEntry:
    """One request: who (user, groups, key name), what (route, question, documents), when."""

    at: datetime  # UTC (a naive time is taken as UTC)
    request_id: str
    key_name: str | None
    user: str | None
    groups: tuple[str, ...]
    method: str
    route: str
    status: int
    question: str | None
    cited: tuple[str, ...]  # doc_ids of the documents cited (answers) or returned (searches)
    client: str | None


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AuditEntry))
_COLUMNS = ", ".join(FIELDS)


def audit_path(index_path: Path, audit_file: str = "") -> Path:
    return Path(audit_file) if audit_file else Path(index_path) / AUDIT_FILE


def stamp(moment: datetime) -> str:
    """A time as stored: UTC, fixed width, so that comparing the text compares the times."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row(entry: AuditEntry) -> tuple[object, ...]:
    return (stamp(entry.at), entry.request_id, entry.key_name, entry.user,
            json.dumps(list(entry.groups), ensure_ascii=False), entry.method, entry.route, int(entry.status),
            entry.question, json.dumps(list(entry.cited), ensure_ascii=False), entry.client)


def _record(row: tuple[object, ...]) -> dict[str, object]:
    record = dict(zip(FIELDS, row))
    record["groups"] = json.loads(str(record["groups"]))
    record["cited"] = json.loads(str(record["cited"]))
    return record


class AuditLog:
    """The audit log of one service (one index folder, or `serve.audit_file`)."""

    def __init__(self, path: Path, days: float) -> None:
        self.path = Path(path)
        self.days = days
        self._writer: sqlite3.Connection | None = None
        self._writer_pid = 0
        self._pruned = 0.0  # time.monotonic() of this process's last pruning; 0: none yet
        self._lock = threading.Lock()

    def _write(self) -> sqlite3.Connection:
        """One connection for this process's writes, opened at its first record (a connection
        must not cross a fork: a worker forked after one was opened opens its own)."""
        if self._writer is None or self._writer_pid != os.getpid():
            self._writer = self._connect(create=True)
            self._writer.execute("PRAGMA synchronous = NORMAL")  # no sync at every request
            self._writer_pid, self._pruned = os.getpid(), 0.0
        return self._writer

    def close(self) -> None:
        with self._lock:
            if self._writer is not None and self._writer_pid == os.getpid():
                self._writer.close()
            self._writer = None

    def record(self, entry: AuditEntry) -> None:
        """Keep one request's record; prune those older than `days` when this process has not
        done so for a while."""
        with self._lock:
            try:
                conn = self._write()
                with conn:
                    conn.execute(f"INSERT INTO audit ({_COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))})",
                                 _row(entry))
                if not self._pruned or time.monotonic() - self._pruned >= _PRUNE_EVERY:
                    self._prune(conn)
            except sqlite3.Error as exc:
                raise RagError(f"cannot write the audit log {self.path} ({exc}); check the file and its "
                               "folder, or set serve.audit_file") from None

    def prune(self) -> int:
        """Remove the records older than `days` now; returns how many."""
        with self._lock:
            try:
                return self._prune(self._write())
            except sqlite3.Error as exc:
                raise RagError(f"cannot prune the audit log {self.path} ({exc})") from None

    def _prune(self, conn: sqlite3.Connection) -> int:
        with conn:
            removed = conn.execute("DELETE FROM audit WHERE at < ?", (self._oldest(),)).rowcount
        self._pruned = time.monotonic()
        return removed

    def _oldest(self) -> str:
        """The stamp of the oldest record still kept."""
        return stamp(datetime.now(timezone.utc) - timedelta(days=self.days))

    def export(self, since: datetime | None = None, until: datetime | None = None) -> Iterator[dict[str, object]]:
        """The records from `since` (included) to `until` (excluded), oldest first, as JSON-ready
        dicts of the AuditEntry fields (`at` as UTC ISO text, lists for groups and cited). None of
        those older than `days`, pruned or not yet. A missing file is RagError: auditing is off."""
        if not self.path.is_file():
            raise RagError(f"no audit log at {self.path}: auditing is off (serve.audit = true turns it on), "
                           "or the service has answered no request since")
        oldest = self._oldest()
        low = max(stamp(since), oldest) if since else oldest
        where, args = "at >= ?", [low]
        if until is not None:
            where, args = where + " AND at < ?", args + [stamp(until)]
        return self._rows(self._connect(), f"SELECT {_COLUMNS} FROM audit WHERE {where} ORDER BY at, id", args)

    def _rows(self, conn: sqlite3.Connection, query: str, args: list[str]) -> Iterator[dict[str, object]]:
        """The records a query selects, read as they are written out (an export may be large)."""
        try:
            for row in conn.execute(query, args):
                yield _record(row)
        except sqlite3.Error as exc:
            raise RagError(f"cannot read the audit log {self.path} ({exc})") from None
        finally:
            conn.close()

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        return open_private(self.path, create, _SCHEMA, _VERSION, "the audit log", "serve.audit_file")


class RequestAudit:
    """Records requests on one background thread, in order: the request path never waits for the
    file, and a record that cannot be written is logged, never turned into a failed request."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-audit")

    def start(self) -> None:
        """Open (and prune) the file now, so a wrong serve.audit_file stops the server at start."""
        self.log.prune()

    def request(self, state: dict[str, Any], request_id: str, method: str, path: str, status: int,
                client: str | None) -> None:
        caller = state.get("caller")
        person = getattr(caller, "person", None)
        question, cited = state.get("audit", (None, ()))
        entry = AuditEntry(datetime.now(timezone.utc), request_id, state.get("key_name"),
                           person.user if person else None, tuple(person.groups) if person else (),
                           method, path, status, question, tuple(cited), client)
        self._executor.submit(self._record, entry)

    def _record(self, entry: AuditEntry) -> None:
        try:
            self.log.record(entry)
        except RagError as exc:
            _log.error("audit record of request %s lost: %s", entry.request_id, exc)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.log.close()
