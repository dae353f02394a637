"""Ratings of answers: POST /v1/feedback on a real `rag serve`, the store behind it, and
`rag feedback export` writing a file that `rag eval qa` runs on."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys

import httpx
import pytest

from rag import RagError
from rag.citations import Answer, Citation
from rag.evaluate.datasets import read_qa_jsonl
from rag.serve.feedback import FeedbackStore, feedback_path, plain_answer

LEAVE = "How many days of annual leave does every employee get?"
TRAVEL = "How do I book trips?"


def _answer(question: str, text: str, doc_ids: list[str], abstained: bool = False) -> Answer:
    citations = [Citation(n, d, f"{d}.md", d, "", "quote") for n, d in enumerate(doc_ids, start=1)]
    return Answer(question, text, citations, [], abstained, bool(citations), generator="extractive")


def test_a_second_rating_replaces_the_first_and_the_files_are_private(tmp_path):
    store = FeedbackStore(feedback_path(tmp_path / "index"))
    assert store.ratings() == [] and not store.path.exists(), "reading creates nothing"
    leave = _answer(LEAVE, "Every employee gets 25 days of annual leave [1][2].", ["hr/leave", "hr/other"])
    store.remember("a1", leave, "key-1", "reader")
    assert store.rate("a1", "down", "wrong", "key-2") is None, "only the key it was given to may rate it"
    assert store.rate("a0", "down", "wrong", "key-1") is None, "an answer never given cannot be rated"
    first, replaced = store.rate("a1", "down", "wrong", "key-1")
    assert not replaced and store.path == tmp_path / "index" / "feedback.sqlite"
    assert store.path.stat().st_mode & 0o777 == 0o600
    again, replaced = store.rate("a1", "up", None, "key-1")
    assert replaced
    [kept] = store.ratings()
    assert kept == again and kept.rating == "up" and kept.comment is None
    assert kept.doc_ids == ("hr/leave", "hr/other") and kept.key_name == "reader" and kept.generator == "extractive"

    store.remember("a2", _answer(TRAVEL, "Use the portal [1].", ["hr/travel"]), None, None)
    store.remember("a3", _answer("Who is the CEO?", "I don't know.", [], abstained=True), None, None)
    store.rate("a2", "down", "too vague")
    store.rate("a3", "up")
    assert [f.answer_id for f in store.ratings("down")] == ["a2"]

    out = tmp_path / "regression.jsonl"
    assert store.export(out) == 3
    assert out.stat().st_mode & 0o777 == 0o600, "it holds users' questions"
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {tuple(sorted(line)) for line in lines} <= {("answer", "doc_id", "id", "question"), ("id", "question")}
    questions = {q.qid: q for q in read_qa_jsonl(out)}
    assert questions["up-a1"].answers == ("Every employee gets 25 days of annual leave.",)
    assert questions["up-a1"].doc_id == "hr/leave"
    # A thumbs-down is no gold answer, nor is an abstention: the question alone.
    down = questions["down-a2"]
    assert (down.question, down.answers, down.doc_id) == (TRAVEL, (), None)
    assert (questions["up-a3"].answers, questions["up-a3"].doc_id) == ((), None)

    stream = io.StringIO()
    assert store.write_qa(stream, "down") == 1 and json.loads(stream.getvalue())["id"] == "down-a2"
    with pytest.raises(RagError, match="no answers rated 'down'"):
        FeedbackStore(tmp_path / "other.sqlite").export(tmp_path / "empty.jsonl", "down")
    assert not (tmp_path / "empty.jsonl").exists()
    store.close()


def test_answers_are_kept_for_rating_only_for_feedback_hours(tmp_path):
    answer = _answer(LEAVE, "25 days [1].", ["hr/leave"])
    off = FeedbackStore(tmp_path / "off.sqlite", keep_hours=0)
    off.remember("a1", answer, None, None)
    assert not off.path.exists() and off.rate("a1", "up") is None, "0 hours keeps nothing"
    store = FeedbackStore(tmp_path / "on.sqlite", keep_hours=1)
    store.remember("old", answer, None, None)
    with sqlite3.connect(store.path) as conn:  # as if it had been answered two hours ago
        conn.execute("UPDATE answers SET answered_at = answered_at - 7200")
    store.remember("new", answer, None, None)
    with sqlite3.connect(store.path) as conn:
        kept = [row[0] for row in conn.execute("SELECT answer_id FROM answers")]
    assert kept == ["new"], "an unrated answer older than feedback_hours is removed"
    assert store.rate("old", "up") is None and store.rate("new", "up") is not None
    store.close()


def test_plain_answer_drops_citation_markers():
    assert plain_answer("25 days [1] of leave [2, 3] .") == "25 days of leave."
    assert plain_answer("每年 25 天［1］。") == "每年 25 天。"


def test_open_access_rates_its_answers_into_serve_feedback_file(tmp_path, make_engine):
    from fastapi.testclient import TestClient

    from rag.serve.app import create_app

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "leave.md").write_text("# Leave\n\nEvery employee gets 25 days of annual leave.")
    elsewhere = tmp_path / "private" / "ratings.sqlite"
    engine = make_engine(**{"serve.feedback_file": str(elsewhere), "answer.generator": "extractive"})
    engine.index([tmp_path / "docs"])
    # Open mode answers loopback names only (TestClient's default host is "testserver").
    with TestClient(create_app(engine.settings, open_access=True, engine=engine), base_url="http://localhost") as client:
        answer = client.post("/v1/ask", json={"question": LEAVE, "generator": "extractive"}).json()
        r = client.post("/v1/feedback", json={"answer_id": answer["id"], "rating": "up"})
        assert r.status_code == 200, r.text
    [stored] = FeedbackStore(elsewhere).ratings()
    assert stored.key_name is None and stored.question == LEAVE
    assert not (engine.settings.index.path / "feedback.sqlite").exists()


# -- the service -------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}


def _rag(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rag", *args], env=_env(), capture_output=True, text=True,
                          timeout=300)


def _ask(served, question: str, key: str = "reader") -> dict:
    r = httpx.post(f"{served.base}/v1/ask", json={"question": question, "generator": "extractive"},
                   headers=served.auth(key), timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def _rate(served, body: dict, key: str | None = "reader") -> httpx.Response:
    return httpx.post(f"{served.base}/v1/feedback", json=body, headers=served.auth(key) if key else {}, timeout=30)


@pytest.fixture(scope="module")
def rated(served):
    """Two answers to the reader key, the first rated up (after a down it replaces), the second down."""
    leave, travel = _ask(served, LEAVE), _ask(served, TRAVEL)
    assert leave["citations"] and travel["citations"], (leave, travel)
    r = _rate(served, {"answer_id": leave["id"], "rating": "down"})
    assert r.status_code == 200 and r.json() == {"answer_id": leave["id"], "rating": "down", "replaced": False}
    r = _rate(served, {"answer_id": leave["id"], "rating": "up", "comment": "exactly right"})
    assert r.status_code == 200 and r.json()["replaced"] is True
    r = _rate(served, {"answer_id": travel["id"], "rating": "down", "comment": "which portal?"})
    assert r.status_code == 200, r.text
    return {"up": leave, "down": travel}


@pytest.mark.slow
def test_feedback_rates_only_answers_given_to_the_same_key(served, rated):
    answer_id = rated["up"]["id"]
    r = _rate(served, {"answer_id": "0" * 32, "rating": "up"})
    assert r.status_code == 404 and "/v1/ask" in r.json()["detail"]
    for other in ("hr", "writer", "admin"):
        assert _rate(served, {"answer_id": answer_id, "rating": "down"}, other).status_code == 404, other
    assert _rate(served, {"answer_id": answer_id, "rating": "up"}, None).status_code == 401
    for bad in ({"answer_id": answer_id, "rating": "meh"}, {"answer_id": answer_id},
                {"answer_id": answer_id, "rating": "up", "comment": "x" * 2001},
                {"answer_id": answer_id, "rating": "up", "ip": "10.0.0.1"}):
        assert _rate(served, bad).status_code == 422, bad
    stored = b"".join(p.read_bytes() for p in served.index.glob("feedback.sqlite*"))  # with its WAL
    assert served.tokens["reader"].encode() not in stored and b"127.0.0.1" not in stored
    assert b"exactly right" in stored and b"reader" in stored


@pytest.mark.slow
def test_export_is_a_regression_set_rag_eval_qa_runs(served, rated, tmp_path):
    out = tmp_path / "regression.jsonl"
    done = _rag("feedback", "export", "--index", str(served.index), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "rated questions written" in done.stderr
    questions = {q.qid: q for q in read_qa_jsonl(out)}
    up, down = questions[f"up-{rated['up']['id']}"], questions[f"down-{rated['down']['id']}"]
    assert up.question == LEAVE and up.doc_id == rated["up"]["citations"][0]["doc_id"]
    assert up.answers == (plain_answer(rated["up"]["answer"]),) and "[1]" not in up.answers[0]
    assert (down.question, down.answers, down.doc_id) == (TRAVEL, (), None)

    only_down = _rag("feedback", "export", "--index", str(served.index), "--rating", "down")
    assert only_down.returncode == 0, only_down.stderr
    assert all(json.loads(line)["id"].startswith("down-") for line in only_down.stdout.splitlines())

    listed = _rag("feedback", "list", "--index", str(served.index), "--json")
    assert listed.returncode == 0, listed.stderr
    assert {f["answer_id"]: f["comment"] for f in json.loads(listed.stdout)}[rated["down"]["id"]] == "which portal?"

    evaluated = _rag("eval", "qa", str(out), "--index", str(served.index), "--answers", "--generator", "extractive",
                     "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["questions"] == len(questions) and report["retrieval"], report
    assert report["answers"]["scored"] == sum(bool(q.answers) for q in questions.values())
