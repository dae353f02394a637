"""The audit log (serve.audit): records written by many threads and processes at once, exported
between two times, pruned after serve.audit_days, and `rag audit export` as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from rag import RagError
from rag.config import Settings
from rag.errors import ConfigError
from rag.serve.audit import AuditEntry, AuditLog, audit_path

NOW = datetime.now(timezone.utc)


def _entry(at: datetime = NOW, request_id: str = "r1", question: str | None = "How many days of leave?",
           **changes) -> AuditEntry:
    values = {"key_name": "portal", "user": "alice", "groups": ("hr", "staff"), "method": "POST",
              "route": "/v1/ask", "status": 200, "cited": ("hr/leave", "hr/policy"), "client": "10.0.0.7"}
    return AuditEntry(at=at, request_id=request_id, question=question, **(values | changes))


def _stored(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM audit").fetchone()[0]


def test_a_record_comes_back_as_written_from_a_private_file(tmp_path):
    path = audit_path(tmp_path / "index")
    assert path == tmp_path / "index" / "audit.sqlite"
    assert audit_path(tmp_path / "index", str(tmp_path / "elsewhere.sqlite")) == tmp_path / "elsewhere.sqlite"
    log = AuditLog(path, days=90)
    with pytest.raises(RagError, match=r"auditing is off \(serve.audit = true turns it on\)"):
        log.export()
    assert not path.exists(), "reading creates nothing"
    log.record(_entry())
    log.record(_entry(NOW + timedelta(seconds=1), "r2", None, user=None, groups=(), key_name=None, method="GET",
                      route="/v1/documents", cited=(), client=None, status=403))
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.glob("audit.sqlite*")}
    assert modes == {"audit.sqlite": 0o600, "audit.sqlite-wal": 0o600, "audit.sqlite-shm": 0o600}, "with its WAL"
    first, second = log.export()
    assert first == {"at": NOW.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "request_id": "r1", "key_name": "portal",
                     "user": "alice", "groups": ["hr", "staff"], "method": "POST", "route": "/v1/ask", "status": 200,
                     "question": "How many days of leave?", "cited": ["hr/leave", "hr/policy"], "client": "10.0.0.7"}
    assert datetime.fromisoformat(first["at"]) == NOW
    assert (second["user"], second["groups"], second["question"], second["cited"]) == (None, [], None, [])
    log.close()
    assert [r["request_id"] for r in AuditLog(path, days=90).export()] == ["r1", "r2"], "kept after close"


def test_export_between_two_times_in_any_zone(tmp_path):
    log = AuditLog(tmp_path / "audit.sqlite", days=90)
    for hours in (30, 20, 10, 0):
        log.record(_entry(NOW - timedelta(hours=hours), f"h{hours}"))

    def ids(**between: datetime) -> list[object]:
        return [r["request_id"] for r in log.export(**between)]

    assert ids() == ["h30", "h20", "h10", "h0"], "oldest first"
    assert ids(since=NOW - timedelta(hours=20)) == ["h20", "h10", "h0"], "since is included"
    assert ids(until=NOW - timedelta(hours=10)) == ["h30", "h20"], "until is not"
    assert ids(since=NOW - timedelta(hours=25), until=NOW - timedelta(hours=5)) == ["h20", "h10"]
    tokyo = timezone(timedelta(hours=9))
    assert ids(since=(NOW - timedelta(hours=20)).astimezone(tokyo)) == ["h20", "h10", "h0"]
    naive = (NOW - timedelta(hours=20)).replace(tzinfo=None)
    assert ids(since=naive) == ["h20", "h10", "h0"], "a naive time is UTC"
    log.record(_entry((NOW - timedelta(hours=5)).astimezone(tokyo), "tokyo"))
    assert ids(since=NOW - timedelta(hours=6), until=NOW - timedelta(hours=4)) == ["tokyo"]


def test_records_older_than_audit_days_are_pruned_now_and_then_and_never_exported(tmp_path):
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path, days=1)
    log.record(_entry(request_id="new"))  # a process's first record prunes
    for n in range(3):
        log.record(_entry(NOW - timedelta(days=2, hours=n), f"old{n}"))
    assert _stored(path) == 4, "not every record prunes"
    assert [r["request_id"] for r in log.export()] == ["new"], "an export never shows what has expired"
    assert [r["request_id"] for r in log.export(since=NOW - timedelta(days=3))] == ["new"]
    assert [r["request_id"] for r in AuditLog(path, days=3).export()] == ["old2", "old1", "old0", "new"]

    other = AuditLog(path, days=1)  # another process (or a restart): its first record prunes
    other.record(_entry(NOW - timedelta(hours=23), "recent"))
    assert _stored(path) == 2
    log.record(_entry(NOW - timedelta(days=5), "older"))
    assert log.prune() == 1 and _stored(path) == 2
    log.close()
    other.close()


_WRITER = """
import sys, threading, time
from datetime import datetime, timezone
from pathlib import Path
from rag.serve.audit import AuditEntry, AuditLog
path, name, threads, each = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
log = AuditLog(path, days=90)
go = Path(sys.argv[5])
(go.parent / f"ready-{name}").touch()
while not go.exists():
    time.sleep(0.001)
def write(t):
    for n in range(each):
        log.record(AuditEntry(datetime.now(timezone.utc), f"{name}-{t}-{n}", None, "u", (), "POST", "/v1/ask", 200,
                              "q", (), None))
workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
[w.start() for w in workers]
[w.join() for w in workers]
log.close()
"""


def test_threads_of_two_processes_writing_at_once_lose_no_record(tmp_path):
    path, go, threads, each = tmp_path / "index" / "audit.sqlite", tmp_path / "go", 4, 150
    processes = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, str(threads), str(each), str(go)])
                 for name in ("p1", "p2")]
    log = AuditLog(path, days=90)
    while not all((tmp_path / f"ready-{name}").exists() for name in ("p1", "p2")):
        assert all(p.poll() is None for p in processes), "a writer process failed to start"
        time.sleep(0.01)

    def write(t: int) -> None:
        for n in range(each):
            log.record(_entry(datetime.now(timezone.utc), f"main-{t}-{n}"))

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    go.touch()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    log.close()
    ids = [r["request_id"] for r in AuditLog(path, days=90).export()]
    expected = {f"{name}-{t}-{n}" for name in ("main", "p1", "p2") for t in range(threads) for n in range(each)}
    assert len(ids) == len(expected) and set(ids) == expected


def test_audit_days_must_be_positive_and_at_most_ten_years():
    settings = Settings.load(environ={})
    assert (settings.serve.audit, settings.serve.audit_days, settings.serve.audit_file) == (False, 90, "")
    for bad in ("0", "3661"):
        with pytest.raises(ConfigError, match="serve.audit_days"):
            Settings.load(environ={"RAG_SERVE_AUDIT_DAYS": bad})


# -- rag audit export --------------------------------------------------------------------------------


def _rag(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return subprocess.run([sys.executable, "-m", "rag", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def audited(tmp_path) -> Path:
    """An index folder whose audit log holds three requests, 3 days, 1 day and 1 hour ago."""
    index = tmp_path / "index"
    log = AuditLog(audit_path(index), days=90)
    for age, request_id in ((timedelta(days=3), "d3"), (timedelta(days=1), "d1"), (timedelta(hours=1), "h1")):
        log.record(_entry(NOW - age, request_id))
    log.record(_entry(NOW - timedelta(minutes=30), "formula", question="=HYPERLINK(\"http://x\")", cited=()))
    log.close()
    return index


def test_rag_audit_export_writes_jsonl_or_csv_since_a_date_or_a_duration(audited, tmp_path):
    done = _rag("audit", "export", "--index", str(audited))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["request_id"] for r in records] == ["d3", "d1", "h1", "formula"]
    assert records[0]["groups"] == ["hr", "staff"] and "4 audit records written" in done.stderr
    assert "serve.audit is off" in done.stderr, "the default config has it off"

    for since, expected in (("2d", ["d1", "h1", "formula"]), ("90m", ["h1", "formula"]),
                            ((NOW - timedelta(days=2)).date().isoformat(), ["d1", "h1", "formula"]),
                            ((NOW - timedelta(hours=2)).astimezone(timezone(timedelta(hours=-5))).isoformat(),
                             ["h1", "formula"])):
        done = _rag("audit", "export", "--index", str(audited), "--since", since)
        assert done.returncode == 0, done.stderr
        got = [json.loads(line)["request_id"] for line in done.stdout.splitlines()]
        assert got == expected, since
    done = _rag("audit", "export", "--index", str(audited), "--since", "2d", "--until", "12h")
    assert [json.loads(line)["request_id"] for line in done.stdout.splitlines()] == ["d1"]

    done = _rag("audit", "export", "--index", str(audited), "--format", "csv", "--since", "2h")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["request_id"] for r in rows] == ["h1", "formula"]
    assert json.loads(rows[0]["cited"]) == ["hr/leave", "hr/policy"] and rows[0]["status"] == "200"
    assert rows[1]["question"] == "'=HYPERLINK(\"http://x\")", "a spreadsheet shows it, never runs it"


def test_rag_audit_export_follows_serve_audit_file_and_days(audited, tmp_path):
    moved = tmp_path / "audit-elsewhere.sqlite"
    (audited / "audit.sqlite").rename(moved)
    config = tmp_path / "audit.toml"
    config.write_text(f"[serve]\naudit = true\naudit_days = 2\naudit_file = {json.dumps(str(moved))}\n")
    done = _rag("--config", str(config), "audit", "export", "--index", str(audited))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["request_id"] for line in done.stdout.splitlines()] == ["d1", "h1", "formula"]
    assert "3 audit records written" in done.stderr and "serve.audit is off" not in done.stderr


@pytest.mark.parametrize("args, words", [
    (["--since", "yesterday"], ["--since 'yesterday'", "ISO date", "7d"]),
    (["--until", "2026-13-01"], ["--until '2026-13-01'", "ISO date"]),
    (["--since", "1h", "--until", "2h"], ["is not before --until"]),
    (["--format", "xml"], ["--format 'xml'", "jsonl or csv"]),
])
def test_rag_audit_export_refuses_a_bad_time_or_format(audited, args, words):
    done = _rag("audit", "export", "--index", str(audited), *args)
    assert done.returncode == 1 and done.stdout == ""
    for word in words:
        assert word in done.stderr, (word, done.stderr)


def test_rag_audit_export_says_auditing_is_off_when_there_is_no_log(tmp_path):
    done = _rag("audit", "export", "--index", str(tmp_path / "index"))
    assert done.returncode == 1 and done.stdout == ""
    assert "auditing is off (serve.audit = true turns it on)" in done.stderr
    assert not (tmp_path / "index").exists()
