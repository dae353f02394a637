"""Several `rag serve` processes on one index folder, started for real on 127.0.0.1 and called
with httpx: a write through one is read through the other on its next request, writes from two
processes queue on the index's lock (a delete that waits too long is told to retry) and all land
in a sound index, and /metrics on any process reports every process's requests (Prometheus
multi-process mode: a shared PROMETHEUS_MULTIPROC_DIR, or the one `--workers N` makes itself)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rag import Engine, Settings
from rag.index.manifest import Manifest
from serving import Server, build_knowledge, running_server, running_servers

pytestmark = pytest.mark.slow
# Extractive answers need no generator model; a short serve.timeout makes a delete that waits
# for the index's lock give up quickly.
_ENV = {"RAG_ANSWER_GENERATOR": "extractive", "RAG_SERVE_TIMEOUT": "3"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, embedder) -> tuple[Server, Server]:
    """Two separate `rag serve` processes on one index, sharing one metrics folder."""
    root = tmp_path_factory.mktemp("pair")
    index = build_knowledge(root, embedder)
    shared = root / "metrics"
    shared.mkdir()
    with running_servers(index, [root / "a.log", root / "b.log"],
                         env={**_ENV, "PROMETHEUS_MULTIPROC_DIR": str(shared)}) as (a, b):
        yield a, b


def _upload(server: Server, collection: str, doc_id: str, text: str) -> str:
    """POST one record; the job's location."""
    posted = httpx.post(f"{server.base}/v1/documents",
                        json={"collection": collection, "records": [{"id": doc_id, "text": text}]})
    assert posted.status_code == 202, posted.text
    return posted.headers["location"]


def _job(server: Server, location: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(server.base + location).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {location} did not finish")


def _found(server: Server, question: str) -> list[str]:
    searched = httpx.post(f"{server.base}/v1/search", json={"question": question, "k": 3}, timeout=30)
    assert searched.status_code == 200, searched.text
    return [hit["doc_id"] for hit in searched.json()["hits"]]


def _requests_counted(server: Server) -> float:
    """The sum of rag_http_requests_total over every label in the server's /metrics."""
    text = httpx.get(f"{server.base}/metrics").text
    return sum(sample.value for family in text_string_to_metric_families(text) if family.name == "rag_http_requests"
               for sample in family.samples if sample.name == "rag_http_requests_total")


def test_a_document_written_through_one_process_is_read_through_the_other_and_deleted_back(pair):
    a, b = pair
    question = "When does the wiki backup run?"
    location = _upload(a, "ops", "wiki-backup", "The wiki backup runs nightly at 02:30 from server ZEBRA-9.")
    # Polled through the other process, as a load balancer may send it: the job is in jobs.sqlite.
    job = _job(b, location)
    assert job["state"] == "done" and job["counts"]["added"] == 1, job
    assert _job(a, location) == job
    assert httpx.get(f"{b.base}/v1/jobs/{'0' * 32}").status_code == 404

    assert _found(b, question)[0] == "wiki-backup"
    asked = httpx.post(f"{b.base}/v1/ask", json={"question": question}, timeout=60).json()
    assert "02:30" in asked["answer"] and "wiki-backup" in {c["doc_id"] for c in asked["citations"]}

    deleted = httpx.delete(f"{b.base}/v1/documents/wiki-backup", timeout=30)
    assert deleted.status_code == 200 and deleted.json()["deleted"] == [{"collection": "ops", "doc_id": "wiki-backup"}]
    assert "wiki-backup" not in _found(a, question)
    assert httpx.get(f"{a.base}/v1/documents/wiki-backup").status_code == 404


def test_writes_through_two_processes_wait_for_the_index_lock_and_both_land(pair):
    a, b = pair
    engine = Engine(Settings.load(overrides={"index.path": str(a.index)}, environ={}))
    live = Manifest.read(a.index / engine.store.current_version())
    # A third process's write (this test's) holds the index's lock while both servers write.
    with engine.store.open_writer(live.embedding, live.chunking):
        to_b = _upload(b, "notes", "note-b", "The loading dock closes at 18:00 on Fridays.")
        # A delete waits serve.timeout for the lock, then says to retry; nothing is deleted.
        busy = httpx.delete(f"{a.base}/v1/documents/travel.md", timeout=30)
        assert busy.status_code == 503 and busy.headers["retry-after"], busy.text
        assert "another process" in busy.json()["detail"] and "retry" in busy.json()["detail"]
        # B's upload has waited all that time, still running, not failed.
        assert httpx.get(b.base + to_b).json()["state"] == "running"
        to_a = _upload(a, "notes", "note-a", "The rooftop garden is watered every Monday by the facilities team.")
        # Behind B's waiting upload, a delete through B is told to retry too.
        queued = httpx.delete(f"{b.base}/v1/documents/travel.md", timeout=30)
        assert queued.status_code == 503 and "retry" in queued.json()["detail"], queued.text
    for server, location in ((a, to_a), (b, to_b)):
        job = _job(server, location)
        assert job["state"] == "done" and job["counts"]["added"] == 1, job
    assert _found(a, "When does the loading dock close?")[0] == "note-b"
    assert _found(b, "When is the rooftop garden watered?")[0] == "note-a"
    assert httpx.delete(f"{a.base}/v1/documents/travel.md", timeout=30).status_code == 200
    assert "travel.md" not in _found(b, "Where do I book trips?")
    assert engine.check().problems == []
    engine.close()


def test_metrics_of_processes_sharing_a_metrics_folder_add_up(pair):
    a, b = pair
    before = {server.base: _requests_counted(server) for server in (a, b)}
    for server in (a, b) * 5:
        assert httpx.get(f"{server.base}/healthz").status_code == 200
    # Either process reports the requests both answered: ten, and a scrape of /metrics.
    for server in (a, b):
        assert _requests_counted(server) - before[server.base] >= 11
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{b.base}/metrics").text)}
    # The index's counts are the one index's, and queue lengths the sum over live processes.
    (documents,) = families["rag_index_documents"].samples
    assert documents.value >= 2 and "pid" not in documents.labels
    assert {s.labels["queue"] for s in families["rag_queue_waiting"].samples} >= {"embedding", "uploads"}
    assert all("pid" not in s.labels for s in families["rag_queue_waiting"].samples)
    # /v1/stats counts every process's requests too, and says its percentiles are its own.
    stats = {server.base: httpx.get(f"{server.base}/v1/stats").json() for server in (a, b)}
    for server in (a, b):
        assert stats[server.base]["scope"]["requests"] == "every process"
        assert stats[server.base]["scope"]["latency_seconds"] == "this process"
        assert stats[server.base]["requests"]["total"] - before[server.base] >= 13
    assert stats[a.base]["scope"]["pid"] != stats[b.base]["scope"]["pid"]
    assert abs(stats[a.base]["requests"]["total"] - stats[b.base]["requests"]["total"]) <= 2
    assert set(stats[b.base]["queues"]) >= {"embedding", "uploads"}


def test_workers_report_every_workers_requests_and_their_metrics_folder_goes_with_them(tmp_path, embedder):
    index = build_knowledge(tmp_path, embedder)
    scratch = tmp_path / "tmp"  # the server's temporary folder, to see the metrics folder it makes
    scratch.mkdir()
    with running_server(index, tmp_path / "server.log", args=["--workers", "2"],
                        env={**_ENV, "TMPDIR": str(scratch)}) as server:
        (folder,) = scratch.glob("rag-metrics-*")
        sent = 0
        # New connections, several at once, until both workers have counted some (a file each).
        with ThreadPoolExecutor(4) as pool:
            while len(list(folder.glob("counter_*.db"))) < 2 and sent < 400:
                statuses = list(pool.map(lambda _: httpx.get(f"{server.base}/healthz").status_code, range(8)))
                assert statuses == [200] * 8
                sent += 8
        assert len(list(folder.glob("counter_*.db"))) == 2, "no request reached the second worker"
        # Whichever worker answers /metrics reports both workers' requests.
        for _ in range(4):
            assert _requests_counted(server) >= sent
    assert not folder.exists()
