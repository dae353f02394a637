"""The service's document routes, uploads and jobs, streamed answers, metrics and the key rules,
against a real `rag serve` with httpx. Tests that write use collections of their own."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from conftest import make_docx, make_pdf
from serving import FINANCE_FACT

pytestmark = pytest.mark.slow


def _wait_for_job(served, location: str, auth: dict[str, str], timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(served.base + location, headers=auth).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {location} did not finish")


def _sse(response: httpx.Response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and name:
            events.append((name, json.loads(line.split(":", 1)[1])))
            name = None
    return events


def test_documents_are_listed_and_read_only_within_the_key(served):
    everything = httpx.get(f"{served.base}/v1/documents", params={"filter": "collection=finance"},
                           headers=served.auth("reader")).json()
    assert everything["total"] == 1 and everything["documents"][0]["doc_id"] == "limits.md"
    listed = httpx.get(f"{served.base}/v1/documents", headers=served.auth("hr")).json()
    assert {d["collection"] for d in listed["documents"]} == {"hr"} and listed["total"] == 2
    page = httpx.get(f"{served.base}/v1/documents", params={"limit": 1, "offset": 1}, headers=served.auth("hr")).json()
    assert page["total"] == 2 and [d["doc_id"] for d in page["documents"]] == ["travel.md"]

    leave = httpx.get(f"{served.base}/v1/documents/leave.md", headers=served.auth("hr")).json()
    assert leave["collection"] == "hr" and "25 days of annual leave" in leave["chunks"][0]["text"]
    # A document the key may not see is absent, as if it did not exist.
    hidden = httpx.get(f"{served.base}/v1/documents/limits.md", headers=served.auth("hr"))
    assert hidden.status_code == 404 and FINANCE_FACT not in hidden.text
    assert httpx.get(f"{served.base}/v1/documents/limits.md", headers=served.auth("reader")).status_code == 200
    widened = httpx.get(f"{served.base}/v1/documents", params={"filter": "collection=finance"},
                        headers=served.auth("hr")).json()
    assert widened["total"] == 0 and widened["documents"] == []


def test_streamed_answers_send_passages_then_tokens_then_the_answer(served):
    body = {"question": "How many days of annual leave does an employee get?", "generator": "extractive",
            "stream": True}
    with httpx.stream("POST", f"{served.base}/v1/ask", json=body, headers=served.auth("reader"), timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _sse(r)
    names = [name for name, _ in events]
    assert names[0] == "passages" and names[-1] == "answer" and set(names[1:-1]) <= {"token"}
    assert all(data["text"] for name, data in events if name == "token")
    passages, answer = events[0][1]["passages"], events[-1][1]
    assert passages and {"number", "doc_id", "title", "source", "location"} <= set(passages[0])
    assert answer["id"] and answer["citations"] and not answer["abstained"]
    assert "".join(data["text"] for name, data in events if name == "token").strip() == answer["answer"]
    assert {c["doc_id"] for c in answer["citations"]} <= {p["doc_id"] for p in passages}

    # The key's filters hold in streaming too, and a bad filter is a plain 422 before any event.
    hr = {"question": "What is the travel reimbursement limit per trip?", "generator": "extractive", "stream": True}
    with httpx.stream("POST", f"{served.base}/v1/ask", json=hr, headers=served.auth("hr"), timeout=120) as r:
        text = r.read().decode()
    assert FINANCE_FACT not in text and "limits.md" not in text
    bad = httpx.post(f"{served.base}/v1/ask", json={**body, "filters": ["mtime>=soon"]}, headers=served.auth("reader"))
    assert bad.status_code == 422
    # The search mode of an answer's retrieval can be chosen, as for /v1/search.
    lexical = httpx.post(f"{served.base}/v1/ask", json={**body, "stream": False, "mode": "bm25"},
                         headers=served.auth("reader"), timeout=120)
    assert lexical.status_code == 200 and lexical.json()["passages"][0]["doc_id"] == "leave.md"
    assert httpx.post(f"{served.base}/v1/ask", json={**body, "mode": "fuzzy"}, headers=served.auth("reader")
                      ).status_code == 422


def test_scopes_a_read_key_cannot_write_and_only_admin_sees_stats_and_metrics(served):
    assert httpx.delete(f"{served.base}/v1/documents/leave.md", headers=served.auth("reader")).status_code == 403
    upload = httpx.post(f"{served.base}/v1/documents", json={"records": [{"id": "x", "text": "y"}]},
                        headers=served.auth("reader"))
    assert upload.status_code == 403 and "write" in upload.json()["detail"]
    for path in ("/v1/stats", "/metrics"):
        assert httpx.get(served.base + path, headers=served.auth("writer")).status_code == 403
        assert httpx.get(served.base + path).status_code == 401
    httpx.post(f"{served.base}/v1/search", json={"question": "annual leave"}, headers=served.auth("reader"))
    stats = httpx.get(f"{served.base}/v1/stats", headers=served.auth("admin")).json()
    assert stats["index"]["counts"]["documents"] >= 3 and stats["models"]["embedding"]
    assert stats["requests"]["total"] > 0 and "embed" in stats["latency_seconds"]["stages"]
    assert stats["latency_seconds"]["routes"]["POST /v1/search"]["p95"] > 0
    metrics = httpx.get(f"{served.base}/metrics", headers=served.auth("admin")).text
    for name in ('rag_http_requests_total{method="POST",route="/v1/search",status="200"}',
                 'rag_stage_duration_seconds_bucket{le="0.005",stage="embed"}', "rag_index_documents",
                 "rag_index_chunks", 'rag_answers_total{outcome="answered"}', 'rag_queue_waiting{queue="embedding"}'):
        assert name in metrics, name


def test_uploads_are_indexed_in_the_background_and_answered_from_without_a_restart(served, tmp_path):
    auth = served.auth("writer")
    pdf = make_pdf(tmp_path / "lab.pdf", ["The cryostat in lab 4 is refilled with liquid helium every Tuesday."])
    docx = make_docx(tmp_path / "safety.docx", [("h1", "Safety"), ("p", "Lab goggles are stored in cabinet K9.")])
    files = [("files", ("lab.pdf", pdf.read_bytes(), "application/pdf")),
             ("files", ("../../etc/..safety.docx", docx.read_bytes(), "application/octet-stream"))]
    posted = httpx.post(f"{served.base}/v1/documents", files=files, data={"collection": "lab"}, headers=auth)
    assert posted.status_code == 202, posted.text
    job = _wait_for_job(served, posted.headers["location"], auth)
    assert job["state"] == "done" and job["counts"]["added"] == 2, job
    assert sorted(job["files"]) == ["lab.pdf", "safety.docx"], "names are made safe: no folders, no leading dots"

    hits = httpx.post(f"{served.base}/v1/search", json={"question": "When is the cryostat refilled?",
                                                        "filters": ["collection=lab"]}, headers=auth).json()["hits"]
    assert hits and hits[0]["doc_id"] == "lab.pdf", "the new version is answered from at once"
    listed = httpx.get(f"{served.base}/v1/documents", params={"filter": "collection=lab"}, headers=auth).json()
    assert [(d["doc_id"], d["source"]) for d in listed["documents"]] == [("lab.pdf", "lab.pdf"),
                                                                         ("safety.docx", "safety.docx")]
    # Another key's job is not visible; records upload into the default collection.
    assert httpx.get(served.base + posted.headers["location"], headers=served.auth("admin")).status_code == 200
    served.add_key("writer2", "write")
    assert httpx.get(served.base + posted.headers["location"], headers=served.auth("writer2")).status_code == 404
    records = httpx.post(f"{served.base}/v1/documents", headers=auth, json={"records": [
        {"id": "memo-1", "text": "The parking garage closes at 22:00.", "metadata": {"team": "facilities"}}]})
    assert records.status_code == 202
    job = _wait_for_job(served, records.headers["location"], auth)
    assert job["state"] == "done" and job["collection"] == "uploads" and job["counts"]["added"] == 1
    memo = httpx.get(f"{served.base}/v1/documents/memo-1", params={"collection": "uploads"}, headers=auth).json()
    assert memo["metadata"]["fields"]["team"] == "facilities"


def test_bad_uploads_are_refused_clearly_and_lose_nothing(served):
    auth = served.auth("writer")
    before = httpx.get(f"{served.base}/v1/documents", headers=auth).json()["total"]
    exe = httpx.post(f"{served.base}/v1/documents", files=[("files", ("tool.exe", b"MZ\x90\x00", "application/x"))],
                     headers=auth)
    assert exe.status_code == 415 and ".exe" in exe.json()["detail"]
    assert httpx.post(f"{served.base}/v1/documents", content=b"hello", headers={**auth, "Content-Type": "text/plain"}
                      ).status_code == 415
    assert httpx.post(f"{served.base}/v1/documents", json={"records": []}, headers=auth).status_code == 422
    assert httpx.post(f"{served.base}/v1/documents", json={"records": [{"id": "a"}]}, headers=auth).status_code == 422
    bad_collection = httpx.post(f"{served.base}/v1/documents", json={"collection": "../x", "records": [
        {"id": "a", "text": "b"}]}, headers=auth)
    assert bad_collection.status_code == 422 and "collection" in bad_collection.json()["detail"]
    big = httpx.post(f"{served.base}/v1/search", headers=auth,
                     json={"question": "x", "filters": ["source=" + "a" * (11 * 2**20)]})
    assert big.status_code == 413 and "serve.max_request_mb" in big.json()["detail"]
    # An upload whose file cannot be read fails alone; the index keeps every document it had.
    broken = httpx.post(f"{served.base}/v1/documents", files=[("files", ("broken.pdf", b"%PDF-1.4 garbage", "x"))],
                        data={"collection": "broken"}, headers=auth)
    job = _wait_for_job(served, broken.headers["location"], auth)
    assert job["counts"]["failed"] == 1 and job["problems"][0]["path"] == "broken.pdf"
    assert "/tmp" not in json.dumps(job) and "rag-upload" not in json.dumps(job)
    assert httpx.get(f"{served.base}/v1/documents", headers=auth).json()["total"] >= before
    # A key limited to hr may not upload outside it.
    served.add_key("hr-writer", "write", ["collection=hr"])
    outside = httpx.post(f"{served.base}/v1/documents", json={"records": [{"id": "a", "text": "b"}]},
                         headers=served.auth("hr-writer"))
    assert outside.status_code == 403


def test_an_upload_never_replaces_a_document_indexed_from_a_folder(served):
    auth = served.auth("writer")
    clash = httpx.post(f"{served.base}/v1/documents", files=[("files", ("leave.md", b"# Leave\n\nNone at all.", "x"))],
                       data={"collection": "hr"}, headers=auth)
    job = _wait_for_job(served, clash.headers["location"], auth)
    assert job["counts"]["failed"] == 1 and "leave.md" in job["problems"][0]["reason"]
    leave = httpx.get(f"{served.base}/v1/documents/leave.md", headers=served.auth("hr")).json()
    assert "25 days" in leave["chunks"][0]["text"]


def test_deletes_during_queries_never_fail_a_query(served):
    auth = served.auth("writer")
    records = [{"id": f"note-{i}", "text": f"Meeting room {i} has a projector of brand Z{i}."} for i in range(12)]
    posted = httpx.post(f"{served.base}/v1/documents", json={"collection": "rooms", "records": records}, headers=auth)
    assert _wait_for_job(served, posted.headers["location"], auth)["state"] == "done"
    failures: list[str] = []
    stop = threading.Event()

    def query() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                r = client.post(f"{served.base}/v1/search", json={"question": "projector brand in meeting room",
                                                                  "filters": ["collection=rooms"]}, headers=auth)
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=query) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        one = httpx.delete(f"{served.base}/v1/documents/note-0", params={"collection": "rooms"}, headers=auth)
        assert one.status_code == 200 and one.json()["deleted"] == [{"collection": "rooms", "doc_id": "note-0"}]
        bulk = httpx.request("DELETE", f"{served.base}/v1/documents", params={"filter": ["collection=rooms",
                                                                                           "doc_id=note-1*"]},
                             headers=auth)
        assert bulk.status_code == 200 and bulk.json()["count"] == 3  # note-1, note-10, note-11
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    left = httpx.get(f"{served.base}/v1/documents", params={"filter": "collection=rooms"}, headers=auth).json()
    assert left["total"] == 8
    assert httpx.delete(f"{served.base}/v1/documents/note-0", params={"collection": "rooms"},
                        headers=auth).status_code == 404
    assert httpx.request("DELETE", f"{served.base}/v1/documents", headers=auth).status_code == 422
    # A write key limited to hr deletes nothing it may not see.
    served.add_key("hr-deleter", "write", ["collection=hr"])
    assert httpx.delete(f"{served.base}/v1/documents/limits.md", headers=served.auth("hr-deleter")).status_code == 404
    nothing = httpx.request("DELETE", f"{served.base}/v1/documents", params={"filter": "collection=finance"},
                            headers=served.auth("hr-deleter"))
    assert nothing.json()["count"] == 0
    assert httpx.get(f"{served.base}/v1/documents/limits.md", headers=served.auth("reader")).status_code == 200


def test_every_request_gets_one_json_access_log_line_without_the_key(served):
    r = httpx.post(f"{served.base}/v1/search", json={"question": "annual leave"},
                   headers={**served.auth("reader"), "X-Request-ID": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    time.sleep(0.2)
    lines = [json.loads(line) for line in served.log.read_text().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line["request_id"] == "trace-123"]
    assert len(mine) == 1 and mine[0]["key"] == "reader" and mine[0]["status"] == 200
    assert mine[0]["route"] == "/v1/search" and "question" not in mine[0]
    assert not any(token in served.log.read_text() for token in served.tokens.values())


def test_a_write_by_another_process_is_answered_from_on_the_next_request(served, tmp_path, embedder):
    from rag import Engine, Settings

    folder = tmp_path / "external"
    folder.mkdir()
    (folder / "canteen.md").write_text("# Canteen\n\nThe canteen serves ramen on Thursdays.", encoding="utf-8")
    question = {"question": "Which day is ramen served?", "filters": ["collection=external"]}
    before = httpx.post(f"{served.base}/v1/search", json=question, headers=served.auth("reader")).json()["hits"]
    assert before == []
    settings = Settings.load(overrides={"index.path": str(served.index), "ingest.collection": "external"}, environ={})
    Engine(settings, embedder=embedder).index([folder])
    after = httpx.post(f"{served.base}/v1/search", json=question, headers=served.auth("reader")).json()["hits"]
    assert [hit["doc_id"] for hit in after] == ["canteen.md"]
