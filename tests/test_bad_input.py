"""Bad input gets a clear error naming what is wrong and what to do, never a traceback, and
leaves the index as it was. One row per case; each row runs the real CLI or the real Engine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from rag import RagError

RAG = [sys.executable, "-m", "rag"]


@dataclass
class Outcome:
    code: int  # the exit status, or 1 for a RagError raised in-process, 0 for success
    text: str  # what the user sees: stderr and stdout, or the error's message


def cli(*args: str, env: dict, cwd: Path | None = None, stdin: str | None = None) -> Outcome:
    done = subprocess.run([*RAG, *args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=300)
    return Outcome(done.returncode, done.stderr + done.stdout)


def raised(call: Callable[[], object]) -> Outcome:
    try:
        call()
    except RagError as exc:
        return Outcome(1, str(exc))
    return Outcome(0, "")


class Ctx:
    def __init__(self, tmp_path: Path, env: dict, make_engine, sample_docs: Path) -> None:
        self.tmp = tmp_path
        self.env = env
        self.make_engine = make_engine
        self.docs = sample_docs

    def built(self, **overrides) -> "object":
        engine = self.make_engine(**overrides)
        engine.index([self.docs])
        return engine

    def live(self, engine) -> Path:
        return engine.store.path / engine.store.current_version()


def _stdin_closed(c: Ctx) -> Outcome:
    done = subprocess.run(["bash", "-c", 'exec "$0" -m rag index --jsonl - <&-', sys.executable], env=c.env,
                          capture_output=True, text=True, timeout=300)
    return Outcome(done.returncode, done.stderr + done.stdout)


def _index_is_a_file(command: str) -> Callable[[Ctx], Outcome]:
    def case(c: Ctx) -> Outcome:
        target = c.tmp / "index.txt"
        target.write_text("not an index")
        args = {"search": ["search", "vacation"], "check": ["check"], "info": ["info"],
                "index": ["index", str(c.docs)]}[command]
        outcome = cli(*args, "--index", str(target), env=c.env)
        assert target.read_text() == "not an index"
        return outcome
    return case


def _manifest_not_utf8(command: str) -> Callable[[Ctx], Outcome]:
    def case(c: Ctx) -> Outcome:
        engine = c.built()
        (c.live(engine) / "manifest.json").write_bytes(b"\xff\xfe{\x00}\x00")
        args = {"search": ["search", "vacation"], "check": ["check"], "info": ["info"]}[command]
        return cli(*args, "--index", str(engine.store.path), env=c.env)
    return case


def _markup_in_names(c: Ctx) -> Outcome:
    docs = c.tmp / "odd"
    docs.mkdir()
    (docs / "[bold]plan[red].md").write_text("The [red]rollout[/red] plan starts in March.")
    (docs / "tickets.jsonl").write_text(json.dumps({"id": "two\nlines", "text": "Ticket about the broken lift."}) + "\n")
    index = c.tmp / "idx[/]"
    done = cli("index", str(docs), "--index", str(index), env=c.env)
    assert done.code == 0, done.text
    assert f"-> {index}" in done.text
    found = cli("search", "broken lift", "--index", str(index), "-k", "1", env=c.env)
    assert found.code == 0, found.text
    assert "two\\nlines" in found.text and len(found.text.strip().splitlines()) == 2, found.text
    listed = cli("search", "rollout plan", "--index", str(index), "-k", "1", env=c.env)
    assert "[bold]plan[red].md" in listed.text and "[red]rollout[/red]" in listed.text, listed.text
    return Outcome(1, "shown as named")


class _NoModel:
    """Stands in for the embedding model where none may load: any use is a test failure."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the embedding model was used ({name}) before the bad filter was reported")


def _bad_filter(expression: str) -> Callable[[Ctx], Outcome]:
    def case(c: Ctx) -> Outcome:
        from rag import Engine

        engine = Engine(c.make_engine().settings, embedder=_NoModel())  # type: ignore[arg-type]
        return raised(lambda: engine.search("anything", filters=[expression]))
    return case


def _jsonl_line(line: bytes) -> Callable[[Ctx], Outcome]:
    def case(c: Ctx) -> Outcome:
        report = c.make_engine().index_jsonl(iter([line]), "export.jsonl")
        assert report.failed == 1 and report.version is None
        problem = report.problems[0]
        return Outcome(1, f"{problem.path}: {problem.reason}")
    return case


def _manifest_dimension(c: Ctx) -> Outcome:
    engine = c.built()
    live = c.live(engine)
    manifest = json.loads((live / "manifest.json").read_text())
    manifest["embedding"]["dimension"] = 768
    (live / "manifest.json").write_text(json.dumps(manifest))
    problems = c.make_engine().check().problems
    assert any("dimension 768" in p for p in problems), problems
    deleting = raised(lambda: c.make_engine().delete(["notes.txt"]))
    assert c.make_engine().store.current_version() == live.name, "no version was committed"
    return Outcome(deleting.code, deleting.text + " | check: " + "; ".join(problems))


def _check_missing_file(c: Ctx) -> Outcome:
    engine = c.built()
    (c.live(engine).parent / "segments" / "s000001" / "postings.json").unlink()
    problems = c.make_engine().check().problems
    return Outcome(1 if problems else 0, "; ".join(problems))


def _sync_over_the_limit(c: Ctx) -> Outcome:
    records = "".join(json.dumps({"id": f"R-{i}", "text": f"Record {i} of the export."}) + "\n" for i in range(9))
    assert cli("index", "--jsonl", "-", env=c.env, stdin=records).code == 0
    return cli("index", "--jsonl", "-", "--sync", env=c.env, stdin=records.splitlines(True)[0])


def _cut_stream(c: Ctx) -> Outcome:
    records = "".join(json.dumps({"id": f"R-{i}", "text": f"Record {i} of the export."}) + "\n" for i in range(9))
    assert cli("index", "--jsonl", "-", env=c.env, stdin=records).code == 0
    return cli("index", "--jsonl", "-", "--sync", "--max-delete", "1", env=c.env, stdin=records[:90])


CASES: list[tuple[str, Callable[[Ctx], Outcome], str]] = [
    ("stdin closed", _stdin_closed, r"--jsonl -: standard input is closed; pipe the records in"),
    ("--index is a file: search", _index_is_a_file("search"), r"index\.txt is a file, not an index folder"),
    ("--index is a file: check", _index_is_a_file("check"), r"index\.txt is a file, not an index folder"),
    ("--index is a file: info", _index_is_a_file("info"), r"index\.txt is a file, not an index folder"),
    ("--index is a file: index", _index_is_a_file("index"), r"index\.txt is a file, not an index folder"),
    ("manifest not UTF-8: search", _manifest_not_utf8("search"), r"manifest\.json is not UTF-8 text"),
    ("manifest not UTF-8: check", _manifest_not_utf8("check"), r"manifest\.json is not UTF-8 text"),
    ("manifest not UTF-8: info", _manifest_not_utf8("info"), r"manifest\.json is not UTF-8 text"),
    ("rich markup and newlines in names", _markup_in_names, r"shown as named"),
    ("filter: mtime not a date", _bad_filter("mtime>=notadate"), r"--filter 'mtime>=notadate': mtime is a date"),
    ("filter: page not a number", _bad_filter("page=two"), r"--filter 'page=two': page is a number"),
    ("filter: no operator", _bad_filter("department"), r"--filter 'department': expected KEY=VALUE"),
    ("jsonl: id is an object", _jsonl_line(b'{"id": {"x": 1}, "text": "t"}\n'),
     r"^export\.jsonl line 1: field 'id' must be a string or a whole number, got an object"),
    ("jsonl: id is a list", _jsonl_line(b'{"id": [1, 2], "text": "t"}\n'),
     r"^export\.jsonl line 1: field 'id' must be a string or a whole number, got a list"),
    ("jsonl: unterminated string", _jsonl_line(b'{"id": "a", "text": "abc\n'),
     r"^export\.jsonl line 1: not valid JSON: the line ends inside a string that starts at column 21$"),
    ("jsonl: line ends early", _jsonl_line(b'{"id": 1,\n'),
     r"^export\.jsonl line 1: not valid JSON: the line ends before the record does \(Expecting property name "
     r"enclosed in double quotes\)$"),
    ("jsonl: missing comma", _jsonl_line(b'{"id": "a" "text": "b"}\n'),
     r"^export\.jsonl line 1: not valid JSON: Expecting ',' delimiter at column 12$"),
    ("jsonl: not UTF-8", _jsonl_line(b'{"id": "a", "text": "caf\xe9"}\n'), r"^export\.jsonl line 1: not UTF-8 text"),
    ("manifest dimension disagrees with FAISS", _manifest_dimension,
     r"the manifest says embedding dimension 768, FAISS holds 384-dimensional vectors( \(segment s000001\))?; nothing was written.*"
     r"\| check: .*dimension 768"),
    ("check: a file of the version is missing", _check_missing_file, r"^s000001/postings\.json is missing from .*segments/s000001"),
    ("sync over index.sync_max_delete", _sync_over_the_limit,
     r"--sync stopped: it would delete 8 of the 9 documents of collection 'default' read from stdin \(89%\)"),
    ("sync of a cut stream", _cut_stream, r"stdin line 2: the last line has no newline.*--sync deleted nothing"),
]


@pytest.mark.parametrize("run, expected", [pytest.param(run, expected, id=name) for name, run, expected in CASES])
def test_bad_input_is_a_clear_error(run, expected, tmp_path, cli_env, make_engine, sample_docs):
    outcome = run(Ctx(tmp_path, cli_env, make_engine, sample_docs))
    assert "Traceback" not in outcome.text, outcome.text
    assert outcome.code == 1, outcome.text
    assert re.search(expected, outcome.text, re.S), outcome.text
