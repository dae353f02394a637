"""The HTTP service, started as `rag serve` on 127.0.0.1 and called with httpx: readiness, keys
(401 without or with a wrong key), and a key limited to one collection never receiving another
collection's passage, even when that passage is the best match."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from rag.serve.keys import KeyStore
from serving import FINANCE_FACT, build_knowledge, running_server

pytestmark = pytest.mark.slow
# These servers answer with the extractive generator only, so they need not load the local model.
_EXTRACTIVE = {"RAG_ANSWER_GENERATOR": "extractive"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedder):
    """A server of its own, started before any key exists (the shared `served` one has keys)."""
    root = tmp_path_factory.mktemp("serve")
    index = build_knowledge(root, embedder)
    with running_server(index, root / "server.log", env=_EXTRACTIVE) as served:
        yield served.base, index


def test_open_on_loopback_while_no_key_exists_then_keys_are_required(server):
    base, index = server
    assert httpx.get(f"{base}/healthz").json() == {"status": "alive"}
    open_hits = httpx.post(f"{base}/v1/search", json={"question": "travel reimbursement limit", "k": 3}).json()["hits"]
    assert open_hits[0]["metadata"]["collection"] == "finance", "without keys every document is served"

    store = KeyStore(index / "keys.sqlite")
    _, token = store.add("everything", "read")
    body = {"question": "travel reimbursement limit"}
    assert httpx.post(f"{base}/v1/search", json=body).status_code == 401
    wrong = httpx.post(f"{base}/v1/search", json=body, headers={"Authorization": "Bearer " + token[:-2] + "xx"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert token not in wrong.text
    ok = httpx.post(f"{base}/v1/search", json=body, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json()["hits"][0]["metadata"]["collection"] == "finance"
    store.revoke("everything")
    assert httpx.post(f"{base}/v1/search", json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_key_limited_to_hr_never_receives_or_cites_a_finance_passage(server):
    base, index = server
    _, token = KeyStore(index / "keys.sqlite").add("hr-portal", "read", ["collection=hr"])
    auth = {"Authorization": f"Bearer {token}"}
    question = "What is the travel reimbursement limit per trip?"
    searched = httpx.post(f"{base}/v1/search", json={"question": question, "k": 10}, headers=auth)
    assert searched.status_code == 200, searched.text
    assert {h["metadata"]["collection"] for h in searched.json()["hits"]} == {"hr"}
    # The request's own filters narrow further, and cannot widen past the key's.
    widened = httpx.post(f"{base}/v1/search", json={"question": question, "filters": ["collection=finance"]},
                         headers=auth)
    assert widened.status_code == 200 and widened.json()["hits"] == []
    asked = httpx.post(f"{base}/v1/ask", json={"question": question, "generator": "extractive"}, headers=auth,
                       timeout=120)
    assert asked.status_code == 200, asked.text
    answer = asked.json()
    assert answer["id"] and {p["doc_id"] for p in answer["passages"]} <= {"leave.md", "travel.md"}
    for response in (searched, widened, asked):
        assert FINANCE_FACT not in response.text and "limits.md" not in response.text


def test_bad_requests_are_clear_and_name_no_server_paths(server):
    base, index = server
    _, token = KeyStore(index / "keys.sqlite").add("checker", "read")
    auth = {"Authorization": f"Bearer {token}"}
    bad_filter = httpx.post(f"{base}/v1/search", json={"question": "x", "filters": ["mtime>=soon"]}, headers=auth)
    assert bad_filter.status_code == 422 and "mtime is a date" in bad_filter.json()["detail"]
    for body in ({"question": ""}, {"question": "x", "k": 0}, {"question": "x", "surprise": 1}):
        assert httpx.post(f"{base}/v1/search", json=body, headers=auth).status_code == 422
    garbage = httpx.post(f"{base}/v1/search", content=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert garbage.status_code == 422 and str(index) not in garbage.text and "Traceback" not in garbage.text
    schema = httpx.get(f"{base}/openapi.json").json()
    assert {"/v1/search", "/v1/ask", "/healthz", "/readyz"} <= set(schema["paths"])


def test_serve_refuses_a_network_address_without_keys(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RAG_")}
    done = subprocess.run([sys.executable, "-m", "rag", "serve", "--host", "0.0.0.0", "--index", str(tmp_path / "i")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no API keys exist, and 0.0.0.0 is reachable from other machines" in done.stderr
    assert "--insecure-no-auth" in done.stderr and "Traceback" not in done.stderr


def test_several_worker_processes_serve_the_same_index_and_cors_follows_the_config(tmp_path, embedder):
    index = build_knowledge(tmp_path, embedder)
    portal = "https://portal.example.com"
    with running_server(index, tmp_path / "server.log", args=["--workers", "2"],
                        env={**_EXTRACTIVE, "RAG_SERVE_CORS_ORIGINS": portal}) as server:
        for _ in range(4):
            hits = httpx.post(f"{server.base}/v1/search", json={"question": "annual leave days"}).json()["hits"]
            assert hits[0]["doc_id"] == "leave.md"
        # Browsers on the configured portal may call the API; other origins get no CORS grant.
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        allowed = httpx.options(f"{server.base}/v1/search", headers={"Origin": portal, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == portal
        other = httpx.options(f"{server.base}/v1/search", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
    assert server.log.read_text().count("Started server process") == 2
