"""Sources on a clock (issue 34): `rag serve` runs a declared source's schedule, one run at a
time across processes (a flock() lease), shows the runs as jobs and in /metrics."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from rag.serve.schedule import Lease, Scheduler
from rag.sources.settings import SourceSettings
from rag.sources.state import RunRecord, SourceState
from serving import running_servers

pytestmark = pytest.mark.slow


def test_a_due_source_is_taken_by_one_scheduler_only_and_not_while_another_process_holds_it(tmp_path):
    declared = SourceSettings(name="share", url="file:///nowhere", every="1s")
    started: list[str] = []
    gate = threading.Barrier(8)

    def submit(source: SourceSettings, lease: Lease) -> None:
        started.append(source.name)
        SourceState(tmp_path).finish(RunRecord(source.name, time.time(), time.time(), True), {})
        lease.release()

    def race() -> None:
        scheduler = Scheduler([declared], tmp_path, submit)
        gate.wait()
        scheduler.consider(declared)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert started == ["share"]  # eight schedulers saw it due; one ran it, the others found it done or leased

    time.sleep(1.1)  # due again, but another process holds the lease
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)"), str(tmp_path / "source-share.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not Scheduler([declared], tmp_path, submit).consider(declared)
    finally:
        holder.kill()
        holder.wait()
    assert Scheduler([declared], tmp_path, submit).consider(declared)  # the kernel freed a dead holder's lease
    assert started == ["share", "share"]
    assert not Scheduler([SourceSettings(name="x", url="file:///y")], tmp_path, submit).sources  # no `every`


def _wait(condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError("timed out")


def test_two_servers_run_a_scheduled_source_as_jobs_never_at_once_and_report_it_in_metrics(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "printers.md").write_text("# Printers\n\nPrinter PRN-7 is on floor 3.", encoding="utf-8")
    config = tmp_path / "rag.toml"
    config.write_text(f'[answer]\ngenerator = "extractive"\n\n[[sources]]\nname = "share"\nurl = "file://{share}"\n'
                      'every = "3s"\n', encoding="utf-8")
    index = tmp_path / "index"
    from rag.serve.keys import KeyStore

    _, admin = KeyStore(index / "keys.sqlite").add("admin", "admin")
    auth = {"Authorization": f"Bearer {admin}"}
    with running_servers(index, [tmp_path / "a.log", tmp_path / "b.log"], env={"RAG_CONFIG": str(config)}) as servers:
        one = servers[0]

        def found(text: str) -> bool:
            answer = httpx.post(f"{one.base}/v1/search", json={"question": text, "k": 3}, headers=auth)
            return answer.status_code == 200 and any(text.split()[-1] in h["text"] for h in answer.json()["hits"])

        _wait(lambda: found("Printer PRN-7"))
        (share / "parking.md").write_text("# Parking\n\nVisitors park in bay P4.", encoding="utf-8")
        _wait(lambda: found("Visitors park in bay P4"))
        jobs = httpx.get(f"{one.base}/v1/jobs", headers=auth).json()
        runs = [j for j in jobs if j["files"] == ["source share"]]
        assert runs and all(j["collection"] == "share" for j in runs) and any(j["state"] == "done" for j in runs)
        time.sleep(7)
        metrics = "".join(httpx.get(f"{s.base}/metrics", headers=auth).text for s in servers)
        assert 'rag_source_runs_total{outcome="ok",source="share"}' in metrics
        assert 'rag_source_last_success_timestamp_seconds{source="share"}' in metrics
    state = SourceState(index)
    import sqlite3

    with sqlite3.connect(state.path) as conn:
        spans = sorted(conn.execute("SELECT started, finished FROM runs WHERE source = 'share'").fetchall())
    assert len(spans) >= 3
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end - 0.001, "two runs of one source overlapped"
        assert start - end >= 2.0, "a run started before the source was due again"
    logs = Path(tmp_path / "a.log").read_text() + Path(tmp_path / "b.log").read_text()
    assert "Traceback" not in logs
