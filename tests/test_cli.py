"""The `rag` command as a user runs it: real subprocesses, real model, real files."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import CORPORA

pytestmark = pytest.mark.slow


def rag(*args, env, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "rag", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_index_search_info_round_trip_with_json(sample_docs, cli_env, tmp_path):
    (sample_docs / "locked.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)
    (sample_docs / "bundle.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    done = rag("index", str(sample_docs), "--json", env=cli_env)
    assert done.returncode == 1, done.stderr  # one file failed
    summary = json.loads(done.stdout)
    assert {k: summary[k] for k in ("documents", "skipped", "failed")} == {"documents": 9, "skipped": 1, "failed": 1}
    assert summary["chunks"] > 0 and summary["seconds"] > 0
    assert f"failed {sample_docs / 'locked.docx'}: password-protected .docx or legacy .doc file" in done.stderr
    assert f"skipped {sample_docs / 'bundle.zip'}: unsupported file type '.zip'" in done.stderr

    found = rag("search", "error code E-451 lidar", "-k", "2", "--json", env=cli_env)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert len(hits) == 2 and set(hits[0]) == {"text", "score", "doc_id", "source", "metadata"}
    assert hits[0]["doc_id"] == "manual.pdf" and hits[0]["metadata"]["page"] == 2

    shown = rag("search", "error code E-451 lidar", "-k", "1", env=cli_env)
    assert "manual.pdf · page 2" in shown.stdout and "E-451" in shown.stdout

    info = rag("info", env=cli_env)
    assert info.returncode == 0 and "documents  9" in info.stdout and "all-MiniLM-L6-v2" in info.stdout
    info_json = json.loads(rag("info", "--json", env=cli_env).stdout)
    assert info_json["manifest"]["counts"]["documents"] == 9 and info_json["disk_bytes"] > 0


def test_exit_codes_strict_and_bad_paths(sample_docs, cli_env, tmp_path):
    (sample_docs / "bundle.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    assert rag("index", str(sample_docs), env=cli_env).returncode == 0  # a skip is not a failure
    strict = rag("index", str(sample_docs), "--strict", env=cli_env)
    assert strict.returncode == 1
    missing = rag("index", str(tmp_path / "nowhere"), env=cli_env)
    assert missing.returncode == 1 and "no such file or folder" in missing.stderr
    bad_setting = rag("index", str(sample_docs), "--batch-size", "-1", env=cli_env)
    assert bad_setting.returncode == 1 and "embedding.batch_size" in bad_setting.stderr
    no_index = rag("search", "x", "--index", str(tmp_path / "none"), env=cli_env)
    assert no_index.returncode == 1 and "no index at" in no_index.stderr


def test_search_builds_the_default_index_from_the_corpus_on_first_use(cli_env, tmp_path):
    work = tmp_path / "fresh"
    work.mkdir()
    shutil.copytree(CORPORA, work / "corpora")
    env = {k: v for k, v in cli_env.items() if k != "RAG_INDEX_PATH"}
    first = rag("search", "How much annual leave do Lisbon employees get?", "--json", env=env, cwd=work)
    assert first.returncode == 0, first.stderr
    assert "building it from corpora" in first.stderr and (work / "indexes/default/CURRENT").is_file()
    assert json.loads(first.stdout)[0]["doc_id"] == "handbook/leave-policy.md"
    second = rag("search", "VPN", "--json", env=env, cwd=work)
    assert second.returncode == 0 and "building" not in second.stderr


def test_config_shows_values_and_origins(cli_env):
    env = dict(cli_env, RAG_SEARCH_K="7")
    shown = rag("config", "--json", env=env)
    data = json.loads(shown.stdout)
    assert data["search.k"] == {"value": 7, "source": "env (RAG_SEARCH_K)", "env": "RAG_SEARCH_K"}
    assert data["chunking.chunk_size"]["source"].startswith("default (")
    bad = rag("config", env=dict(cli_env, RAG_INDEX_NPROBE="-3"))
    assert bad.returncode == 1 and "index.nprobe" in bad.stderr and "greater than or equal to 1" in bad.stderr


def test_ask_without_llm_json_batch_and_bad_input(sample_docs, cli_env, tmp_path):
    assert rag("index", str(sample_docs), env=cli_env).returncode == 0
    done = rag("ask", "What does error code E-451 mean?", "--no-llm", "--json", env=cli_env)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert {"answer", "citations", "passages", "abstained", "grounded", "timings"} <= set(answer)
    assert answer["citations"][0]["doc_id"] == "manual.pdf" and answer["grounded"]

    shown = rag("ask", "What does error code E-451 mean?", "--no-llm", env=cli_env)
    assert "lidar" in shown.stdout and "Sources" in shown.stdout and "manual.pdf · page 2" in shown.stdout

    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "When does the cafeteria close?"}\nWho approves big purchases?\n')
    out = tmp_path / "answers.jsonl"
    batch = rag("ask", "--file", str(questions), "--out", str(out), "--no-llm", env=cli_env)
    assert batch.returncode == 0, batch.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "2"] and rows[0]["citations"][0]["doc_id"] == "notes.txt"

    assert rag("ask", "   ", "--no-llm", env=cli_env).returncode == 1
    unreachable = rag("ask", "What does error code E-451 mean?", env=dict(cli_env, RAG_ANSWER_GENERATOR="openai",
                                            RAG_GENERATE_OPENAI_BASE_URL="http://127.0.0.1:9/v1",
                                            RAG_GENERATE_OPENAI_MODEL="m", RAG_GENERATE_RETRIES="0"))
    assert unreachable.returncode == 1 and "cannot reach the generator at http://127.0.0.1:9/v1" in unreachable.stderr
    missing = rag("ask", "x?", "--no-llm", "--index", str(tmp_path / "none"), env=cli_env)
    assert missing.returncode == 1 and "no index at" in missing.stderr


# -- conversations: rag chat, --history (issue 30) --------------------------------------------------

E451_HISTORY = [{"role": "user", "content": "What does error code E-451 mean?"},
                {"role": "assistant", "content": "The lidar sensor is blocked [1]."}]


def test_chat_answers_follow_ups_in_context_and_starts_over(sample_docs, cli_env):
    assert rag("index", str(sample_docs), env=cli_env).returncode == 0
    typed = "\n".join(["What does error code E-451 mean?", "How do I fix it?", "/sources", "/new",
                       "How do I fix it?", "/help"]) + "\n"
    done = subprocess.run([sys.executable, "-m", "rag", "chat", "--no-llm"], input=typed, env=cli_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr  # the input ended (Ctrl-D): a normal exit
    # The follow-up was searched with the first question and answered from the manual.
    assert "searched for: How do I fix it? What does error code E-451 mean?" in done.stderr
    assert done.stdout.count("manual.pdf · page 2") >= 3, done.stdout  # two answers' sources, and /sources
    assert "dry cloth" in done.stdout
    assert "New conversation." in done.stderr and "/sources" in done.stderr.split("New conversation.")[1]
    # After /new the same words are a first question again: searched as they are.
    assert done.stderr.count("searched for:") == 1


def test_ask_and_search_take_a_history_file(sample_docs, cli_env, tmp_path):
    assert rag("index", str(sample_docs), env=cli_env).returncode == 0
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps(t) + "\n" for t in E451_HISTORY), encoding="utf-8")
    done = rag("ask", "How do I fix it?", "--no-llm", "--json", "--history", str(history), env=cli_env)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["query"] == "How do I fix it? What does error code E-451 mean?"
    assert answer["citations"][0]["doc_id"] == "manual.pdf"
    found = rag("search", "How do I fix it?", "--json", "--history", str(history), "-k", "1", env=cli_env)
    assert found.returncode == 0, found.stderr
    assert "manual.pdf" in found.stdout

    # Each record of a --file may carry its own history.
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "f", "question": "How do I fix it?", "history": E451_HISTORY}) + "\n"
                         + json.dumps({"id": "s", "question": "How do I fix it?"}) + "\n", encoding="utf-8")
    batch = rag("ask", "--file", str(questions), "--no-llm", env=cli_env)
    assert batch.returncode == 0, batch.stderr
    rows = {r["id"]: r for r in map(json.loads, batch.stdout.splitlines())}
    assert rows["f"]["query"].endswith("E-451 mean?") and rows["s"]["query"] == "How do I fix it?"

    history.write_text('{"role": "user", "content": "a"}\n{"role": "system", "content": "b"}\n', encoding="utf-8")
    bad = rag("ask", "How do I fix it?", "--no-llm", "--history", str(history), env=cli_env)
    assert bad.returncode != 0 and "history.jsonl line 2" in bad.stderr
    questions.write_text(json.dumps({"question": "x", "history": [{"role": "tool", "content": "y"}]}) + "\n")
    bad = rag("ask", "--file", str(questions), "--no-llm", env=cli_env)
    assert bad.returncode != 0 and "q.jsonl line 1: history[0]" in bad.stderr
