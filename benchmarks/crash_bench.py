#!/usr/bin/env python3
"""Crash safety: SIGKILL `rag index` at random moments; no kill may corrupt the index or lose a document.

The first 2,000 BEIR SciFact abstracts are written as text files (title on the first line) into
a temporary folder. Each case starts a `rag index` process, kills it (and anything it started)
with SIGKILL after a random delay between 0.5 s and the time the same kind of run takes
uninterrupted (measured once up front, then updated by every uninterrupted run of that kind the
bench sees, since other work on the machine changes it), or, every second case, at a random
moment of its commit (within COMMIT_WINDOW s of the writer logging that it builds BM25, a window
that uniform delays over a whole run almost never hit), then checks the index it was writing:

* A, plain `rag index`: alternately a first build into an empty index, and a run adding the
  second 1,000 files to an index that holds the first 1,000.
* B, `rag index --sync`: from a cleanly indexed folder, ~5% of the files deleted, ~5% modified
  and ~5% added (abstracts 2,000 and beyond), then the sync is killed.

After a kill the index is intact when `rag check --json` says ok, `rag search --json` returns
hits, and the documents of the live version (CURRENT, then its chunks.sqlite, read-only) are
exactly the state before the killed run or the state it would have left: versions are
atomic, so all of the run or none of it. Documents lost: ids the run should have kept that
the live version lacks, plus documents whose content matches neither state. Then the same
command runs to completion: the next writer must clean up what the killed one left and reach
the complete state (the start of the next case).

Data is read from ../shared/datasets (or $RAG_DATASETS) into a temporary folder, removed at
the end; nothing is copied into the repository. Unless --no-record, the figures are appended
to docs/benchmarks.md. Exits 1 when any case was not intact, lost a document or did not
recover.

    python3 benchmarks/crash_bench.py                     # 20 kills, 10 of each scenario
    python3 benchmarks/crash_bench.py --kills 4 --no-record
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from benchmark_record import append_section, machine
from rag.index.writer import COMMIT_STARTS

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_DOCS = 2000
CHANGE_SHARE = 0.05  # of the folder deleted, modified and added per --sync case
MIN_DELAY = 0.5
# Every second kill lands in the commit: within this many seconds after the writer logs that it
# builds BM25, it writes FAISS, the manifest, fsyncs, renames and swaps CURRENT (about 0.1 s for
# 2,000 abstracts here).
COMMIT_STAGE = COMMIT_STARTS  # the writer's own line, so that the two cannot drift apart
COMMIT_WINDOW = 0.15
MAX_ATTEMPTS_FACTOR = 3  # runs that finish before their kill are redrawn, up to this many attempts per kill

State = dict[str, str]  # doc id (path relative to the indexed folder) -> sha256 of the file's bytes


@dataclass
class Case:
    """One killed run and what was found after it."""

    scenario: str
    kind: str
    delay: float
    upto: float  # the delay's upper bound: how long this kind of run last took uninterrupted
    stage: str = ""
    live: str = "none"
    matches: str = "neither"
    check_ok: bool = False
    search_ok: bool = False
    leftovers: list[str] = field(default_factory=list)
    lost: int = 0
    intact: bool = False
    recovered: bool = False
    notes: list[str] = field(default_factory=list)


# -- data ----------------------------------------------------------------------------------


def _abstracts(scifact: Path) -> list[dict[str, str]]:
    with (scifact / "corpus.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _queries(scifact: Path) -> list[str]:
    with (scifact / "queries.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def _write(folder: Path, record: dict[str, str], extra: str = "") -> None:
    text = f"{record['title']}\n\n{record['text']}\n{extra}"
    (folder / f"{record['_id']}.txt").write_text(text, encoding="utf-8")


def _reset_folder(folder: Path, records: list[dict[str, str]]) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for record in records:
        _write(folder, record)


def _folder_state(folder: Path) -> State:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.txt"))}


def _mutate(folder: Path, rng: random.Random, extras: Iterator[dict[str, str]], round_no: int) -> str:
    """Delete, modify and add ~5% of the folder each: one --sync case's worth of change."""
    files = sorted(folder.glob("*.txt"))
    n = max(1, round(len(files) * CHANGE_SHARE))
    deleted = rng.sample(files, n)
    for path in deleted:
        path.unlink()
    kept = [p for p in files if p not in set(deleted)]
    for path in rng.sample(kept, n):
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"\nRevised in round {round_no}: the findings above were re-examined.\n")
    for _ in range(n):
        _write(folder, next(extras))
    return f"-{n} ~{n} +{n}"


# -- the index, read directly --------------------------------------------------------------


def _current(index: Path) -> str | None:
    try:
        return (index / "CURRENT").read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def _index_state(index: Path) -> tuple[str | None, State]:
    """The live version's documents, read through its segments' SQLite files opened read-only."""
    from rag.config import Settings
    from rag.index.store import IndexStore

    version = _current(index)
    if version is None:
        return None, {}
    conn = IndexStore(index, Settings.load(environ={}).index).open_rows(version).conn
    try:
        return version, {doc_id: sha for doc_id, sha in conn.execute("SELECT doc_id, sha256 FROM documents")}
    finally:
        conn.close()


def _leftovers(index: Path) -> list[str]:
    """What a killed writer may leave: staging folders (of versions and of segments), versions
    past CURRENT, CURRENT.tmp."""
    if not index.is_dir():
        return []
    current = _current(index)
    number = int(current[1:]) if current and current[1:].isdigit() else 0
    out = []
    for entry in sorted(index.iterdir()):
        match = re.fullmatch(r"v(\d+)", entry.name)
        newer = match is not None and int(match.group(1)) > number
        if entry.name.startswith(".staging-") or entry.name == "CURRENT.tmp" or newer:
            out.append(entry.name)
    segments = index / "segments"
    if segments.is_dir():
        out.extend(f"segments/{entry.name}" for entry in sorted(segments.iterdir()) if entry.name.startswith(".staging-"))
    return out


# -- running rag ---------------------------------------------------------------------------


class Rag:
    """`python -m rag` with the environment the bench controls (no RAG_* from the caller)."""

    def __init__(self, logs: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.logs = logs
        self.runs = 0
        help_text = self._run(["--help"]).stdout
        # -v logs each write stage, which names where a kill landed; the bench works without it.
        self.base = [sys.executable, "-m", "rag"] + (["-v"] if "--verbose" in help_text else [])

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rag", *args], cwd=REPO_ROOT, env=self.env,
                              capture_output=True, text=True)

    def cmd(self, args: list[str]) -> list[str]:
        return [*self.base, *args]

    def complete(self, args: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.perf_counter()
        proc = subprocess.run(self.cmd(args), cwd=REPO_ROOT, env=self.env, capture_output=True, text=True)
        return time.perf_counter() - started, proc

    def killed(self, args: list[str], delay: float, after: str | None = None) -> tuple[bool, float, str]:
        """Start the run, SIGKILL its process group `delay` s after it starts (or after its log
        first shows `after`); (killed, seconds, last stage)."""
        self.runs += 1
        log = self.logs / f"run-{self.runs:03d}.log"
        started = time.perf_counter()
        with log.open("w") as out:
            proc = subprocess.Popen(self.cmd(args), cwd=REPO_ROOT, env=self.env, stdout=out, stderr=out,
                                    start_new_session=True)
            while after is not None and proc.poll() is None and after not in log.read_text(errors="replace"):
                time.sleep(0.01)
            try:
                proc.wait(timeout=delay)
                killed = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = True
        seconds = time.perf_counter() - started
        stages = re.findall(r"stage: (.*)", log.read_text(errors="replace"))
        return killed, seconds, (stages[-1].strip() if stages else "starting (model, discovery)")

    def check(self, index: Path) -> tuple[bool, str]:
        proc = self._run(["check", "--index", str(index), "--json"])
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            return False, f"rag check exit {proc.returncode}: {_tail(proc.stderr or proc.stdout)}"
        ok = proc.returncode == 0 and report.get("ok") is True
        return ok, "" if ok else f"rag check exit {proc.returncode}: {report.get('problems')}"

    def search(self, index: Path, query: str) -> tuple[bool, str]:
        proc = self._run(["search", query, "--index", str(index), "--json", "-k", "3"])
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            return False, f"rag search exit {proc.returncode}: {_tail(proc.stderr or proc.stdout)}"
        hits = report if isinstance(report, list) else report.get("hits", report.get("results", []))
        ok = proc.returncode == 0 and len(hits) > 0
        return ok, "" if ok else f"rag search exit {proc.returncode}, {len(hits)} hits"


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


# -- one case ------------------------------------------------------------------------------


def _judge(rag: Rag, index: Path, case: Case, before: State, after: State, query: str) -> None:
    """Fill in what the kill left: live version, which state it holds, check, search, losses."""
    case.leftovers = _leftovers(index)
    try:
        version, docs = _index_state(index)
    except sqlite3.Error as exc:
        version, docs = _current(index), None
        case.notes.append(f"documents table unreadable: {exc}")
    if version is None and not before:
        # A first build killed before its commit: no index yet is the whole "before" state.
        case.live, case.matches = "none", "before"
        case.check_ok = case.search_ok = True
        case.notes.append("no version committed yet (check/search not applicable)")
    else:
        case.live = version or "none"
        case.check_ok, why = rag.check(index)
        if why:
            case.notes.append(why)
        case.search_ok, why = rag.search(index, query)
        if why:
            case.notes.append(why)
    if docs is not None:
        case.matches = "before" if docs == before else "after" if docs == after else case.matches
        if version is None and before:
            case.matches = "neither"
    if case.matches == "neither":
        docs = docs or {}
        missing = [d for d in before.keys() & after.keys() if d not in docs]
        wrong = [d for d, sha in docs.items() if sha not in (before.get(d), after.get(d))]
        case.lost = len(missing) + len(wrong)
        half_done = sum(1 for d in before.keys() ^ after.keys() if (d in docs) != (d in before))
        case.notes.append(f"{len(docs)} documents: {len(missing)} missing, {len(wrong)} with content of neither "
                          f"state, {half_done} of {len(before.keys() ^ after.keys())} added/deleted ids applied")
    case.intact = case.check_ok and case.search_ok and case.matches in ("before", "after")


def _recover(rag: Rag, index: Path, args: list[str], case: Case, after: State) -> float | None:
    """Run the killed command to completion: it must clean up and reach the complete state.

    Returns the re-run's seconds when it succeeded, else None."""
    seconds, proc = rag.complete(args)
    if proc.returncode != 0:
        case.notes.append(f"re-run exit {proc.returncode}: {_tail(proc.stderr)}")
        return None
    try:
        docs = _index_state(index)[1]
    except sqlite3.Error as exc:
        case.notes.append(f"after re-run the documents table is unreadable: {exc}")
        return None
    ok, why = rag.check(index)
    left = _leftovers(index)
    if docs != after:
        case.notes.append(f"re-run left {len(docs)} documents, not the {len(after)} of the folder")
    if not ok:
        case.notes.append(f"after re-run: {why}")
    if left:
        case.notes.append(f"after re-run still there: {', '.join(left)}")
    return seconds if docs == after and ok and not left else None


# -- scenarios -----------------------------------------------------------------------------


def _line(i: int, case: Case) -> str:
    left = ",".join(case.leftovers) or "-"
    return (f"{case.scenario} {i:2d} {case.kind:<11} kill at {case.delay:5.1f} of {case.upto:5.1f} s  "
            f"stage: {case.stage[:38]:<38} live {case.live} ({case.matches})  left {left[:36]:<36} "
            f"intact {'yes' if case.intact else 'NO'}  lost {case.lost}  re-run {'ok' if case.recovered else 'FAILED'}"
            + (f"  [{'; '.join(case.notes)}]" if case.notes else ""))


def _clean(rag: Rag, args: list[str], what: str) -> float:
    seconds, proc = rag.complete(args)
    if proc.returncode != 0:
        raise SystemExit(f"{what}: `rag {' '.join(args)}` exit {proc.returncode}: {_tail(proc.stderr, 8)}")
    print(f"{what}: {seconds:.1f} s", flush=True)
    return seconds


def run(args: argparse.Namespace, scifact: Path,
        work: Path) -> tuple[list[Case], list[Case], dict[str, float], int]:
    """The calibration runs, then the kills; returns counted kills, runs that ended first, timings, runs."""
    rng = random.Random(args.seed)
    abstracts = _abstracts(scifact)
    queries = _queries(scifact)
    base, extras = abstracts[:BASE_DOCS], iter(abstracts[BASE_DOCS:])
    docs, index, half_index, calib = work / "docs", work / "index", work / "half-index", work / "calib-index"
    (work / "logs").mkdir()
    rag = Rag(work / "logs")
    index_args = ["index", str(docs), "--index", str(index)]

    # Calibration: how long each kind of run takes uninterrupted (the kill delay's upper bound).
    timing: dict[str, float] = {}
    _reset_folder(docs, base[:BASE_DOCS // 2])
    half_state = _folder_state(docs)
    timing["first half"] = _clean(rag, ["index", str(docs), "--index", str(half_index)], "indexing the first half")
    for record in base[BASE_DOCS // 2:]:
        _write(docs, record)
    full_state = _folder_state(docs)
    shutil.copytree(half_index, calib)
    timing["add half"] = _clean(rag, ["index", str(docs), "--index", str(calib)], "adding the second half")
    shutil.rmtree(calib)
    timing["first build"] = _clean(rag, ["index", str(docs), "--index", str(calib)], "the first full build")
    # The kill delay's upper bound then follows the machine's load (other processes share its
    # cores): a run that finished before its kill, or a re-run that redid all of a killed run's
    # work (nothing of it was committed), is an uninterrupted run of that kind too.
    bound = dict(timing)

    cases: list[Case] = []
    misses: list[Case] = []  # runs that finished before their kill: judged, not counted as kills
    attempts = 0
    n_a = args.kills // 2
    n_b = args.kills - n_a

    # A: first builds and additions to a half-built index.
    i = 0
    while i < n_a and attempts < MAX_ATTEMPTS_FACTOR * args.kills:
        attempts += 1
        kind = "first build" if i % 2 == 0 else "add half"
        shutil.rmtree(index, ignore_errors=True)
        if kind == "first build":
            before: State = {}
        else:
            shutil.copytree(half_index, index)
            before = half_state
        after = full_state
        in_commit = i % 4 >= 2  # each kind is killed in the commit every second time
        case = Case("A", kind + (" (commit)" if in_commit else ""),
                    rng.uniform(0, COMMIT_WINDOW) if in_commit else rng.uniform(MIN_DELAY, bound[kind]),
                    COMMIT_WINDOW if in_commit else bound[kind])
        killed, seconds, case.stage = rag.killed(index_args, case.delay, COMMIT_STAGE if in_commit else None)
        _judge(rag, index, case, before, after, rng.choice(queries))
        redo = _recover(rag, index, index_args, case, after)
        case.recovered = redo is not None
        if redo is not None and case.matches == "before":
            bound[kind] = redo
        if not killed:
            print(f"(finished in {seconds:.1f} s, before its kill; drawn again) " + _line(0, case), flush=True)
            misses.append(case)
            bound[kind] = seconds
            continue
        i += 1
        cases.append(case)
        print(_line(i, case), flush=True)

    # B: --sync runs after deleting, modifying and adding ~5% each.
    if n_b:
        if _folder_state(docs) != full_state or _index_state(index)[1] != full_state:
            _reset_folder(docs, base)
            shutil.rmtree(index, ignore_errors=True)
            _clean(rag, index_args, "rebuilding the index for B")
        sync_args = [*index_args, "--sync"]
        _mutate(docs, rng, extras, 0)
        timing["sync"] = bound["sync"] = _clean(rag, sync_args, "a sync after 5% changes")
        indexed = _folder_state(docs)  # what `index` holds: the folder as of its last completed run
        i = 0
        while i < n_b and attempts < MAX_ATTEMPTS_FACTOR * args.kills:
            attempts += 1
            before = indexed
            if _index_state(index)[1] != before:
                print("B: the index does not hold the folder's last indexed state before the kill", flush=True)
            change = _mutate(docs, rng, extras, attempts)
            after = _folder_state(docs)
            in_commit = i % 2 == 1
            case = Case("B", f"sync {change}" + (" (commit)" if in_commit else ""),
                        rng.uniform(0, COMMIT_WINDOW) if in_commit else rng.uniform(MIN_DELAY, bound["sync"]),
                        COMMIT_WINDOW if in_commit else bound["sync"])
            killed, seconds, case.stage = rag.killed(sync_args, case.delay, COMMIT_STAGE if in_commit else None)
            _judge(rag, index, case, before, after, rng.choice(queries))
            redo = _recover(rag, index, sync_args, case, after)
            case.recovered = redo is not None
            if redo is not None and case.matches == "before":
                bound["sync"] = redo
            if not case.recovered:
                shutil.rmtree(index, ignore_errors=True)
                _clean(rag, index_args, "rebuilding after a failed re-run")
            indexed = _folder_state(docs)
            if not killed:
                print(f"(finished in {seconds:.1f} s, before its kill; drawn again) " + _line(0, case), flush=True)
                misses.append(case)
                bound["sync"] = seconds
                continue
            i += 1
            cases.append(case)
            print(_line(i, case), flush=True)
    return cases, misses, timing, attempts


def _record(args: argparse.Namespace, started: dt.datetime, cases: list[Case], timing: dict[str, float],
            attempts: int, summary: list[str], minutes: float) -> None:
    rows = ["| # | scenario | run | kill after s (of) | stage reached | live version | state | intact | lost "
            "| re-run |",
            "|---:|---|---|---:|---|---|---|---|---:|---|"]
    for n, c in enumerate(cases, 1):
        rows.append(f"| {n} | {c.scenario} | {c.kind} | {c.delay:.2f} of {c.upto:.2f} | {c.stage} | {c.live} | "
                    f"{c.matches} | {'yes' if c.intact else '**no**'} | {c.lost} | "
                    f"{'ok' if c.recovered else '**failed**'} |")
    flags = "" if args.kills == 20 else f" --kills {args.kills}"
    flags += "" if args.seed == 0 else f" --seed {args.seed}"
    gpu = "none" if shutil.which("nvidia-smi") is None else "present"
    append_section("Crash safety: SIGKILL during `rag index`", started, [
        f"Machine: {machine()}, GPU: {gpu}; first {BASE_DOCS:,} SciFact abstracts as text files; "
        "half the kills after a delay uniform between 0.5 s and the latest uninterrupted time of that kind of run, "
        f"half (marked commit) within {COMMIT_WINDOW} s after the writer logs `{COMMIT_STAGE.split(': ')[1]}` "
        "(BM25, FAISS, manifest, fsync, rename, CURRENT swap) "
        "(the machine is shared; measured up front: " + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items())
        + f"); {attempts} runs started for {len(cases)} kills (a run that finished first was drawn again); "
        f"took {minutes:.0f} min",
        "Intact: `rag check` ok, `rag search` has hits, live documents equal the state before or after "
        "the killed run; each kill is followed by the same command run to completion (re-run)",
        f"Reproduce: `python3 benchmarks/crash_bench.py{flags}`"],
        "\n".join(rows) + "\n\n" + "\n".join(f"- **{line}**" if n == len(summary) - 1 else f"- {line}"
                                          for n, line in enumerate(summary)) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="kills in all, split evenly between A and B")
    p.add_argument("--seed", type=int, default=0, help="seed of the delays, changes and queries")
    p.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = p.parse_args()
    scifact = Path(os.environ.get("RAG_DATASETS", REPO_ROOT.parent / "shared" / "datasets")) / "beir-scifact"
    started = dt.datetime.now(dt.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="crash-bench-"))
    try:
        cases, misses, timing, attempts = run(args, scifact, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a = [c for c in cases if c.scenario == "A"]
    b = [c for c in cases if c.scenario == "B"]
    lost = sum(c.lost for c in cases)
    recovered = sum(c.recovered for c in cases)
    summary = [f"A: {sum(c.intact for c in a)}/{len(a)} intact",
               f"B: {sum(c.intact for c in b)}/{len(b)} intact",
               f"re-runs after the kills: {recovered}/{len(cases)} cleaned up and complete",
               f"total {sum(c.intact for c in cases)}/{len(cases)} intact, documents lost: {lost}"]
    minutes = (dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60
    print("\n".join(summary) + f"\n({attempts} runs started, {minutes:.0f} min)", flush=True)
    if not args.no_record:
        _record(args, started, cases, timing, attempts, summary, minutes)
    short = len(cases) < args.kills
    if short:
        print(f"only {len(cases)} of {args.kills} runs were killed before they finished", file=sys.stderr)
    bad_misses = [c for c in misses if not (c.intact and c.recovered)]
    if bad_misses:
        print(f"{len(bad_misses)} runs that finished before their kill left a wrong index", file=sys.stderr)
    ok = all(c.intact and c.recovered for c in cases)
    return 0 if cases and ok and lost == 0 and not short and not bad_misses else 1


if __name__ == "__main__":
    raise SystemExit(main())
