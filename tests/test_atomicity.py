"""A `rag index` killed with SIGKILL at any moment leaves the previous index opening and answering."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag import Engine
from rag.index.manifest import Manifest

pytestmark = pytest.mark.slow

# Log lines the writer prints (with -v) just before each step; the test kills right after one.
STAGES = [
    "stage: writing into",        # the new segment's staging folder created, older segments attached
    "stage: embedding",           # model busy, chunks going into the new segment's SQLite
    "stage: building the BM25 postings",
    "stage: writing FAISS index",
    "stage: merging",             # the new segment renamed into place, a merged one being written
    "stage: syncing files to disk",
    "stage: swapping CURRENT",
]


def _more_docs(root: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"ticket-{i:03d}.md").write_text(
            f"# Ticket {i}\n\n" + " ".join(f"Step {j}: the conveyor belt in zone {i} stalls at {j} rpm." for j in range(30))
        )


def _kill_at(cmd: list[str], env: dict, marker: str | None, delay: float | None) -> str:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    started = time.monotonic()
    try:
        if marker is None:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        else:
            for line in proc.stderr:
                seen.append(line)
                if marker in line:
                    proc.send_signal(signal.SIGKILL)
                    break
    finally:
        proc.wait(timeout=120)
    if marker is not None:
        assert any(marker in line for line in seen), f"never reached {marker!r}: {''.join(seen)[-2000:]}"
    return f"{marker or f'after {delay:.1f}s'} (rc {proc.returncode}, {time.monotonic() - started:.1f}s)"


def test_sigkill_at_every_stage_leaves_a_working_index(make_engine, sample_docs, tmp_path, embedder):
    engine = make_engine()
    engine.index([sample_docs])
    base_version = engine.store.current_version()
    _more_docs(sample_docs, 60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["RAG_INDEX_MAX_SEGMENTS"] = "1"  # every write then merges its segment with the older one
    cmd = [sys.executable, "-m", "rag", "-v", "index", str(sample_docs), "--index", str(engine.store.path)]
    rng = random.Random(7)
    # Every stage's start, then 15 random moments across the run (model load, embedding, FAISS
    # writes, SQLite commit, fsync, the swap): 20 kills in all.
    moments = [(stage, None) for stage in STAGES] + [(None, rng.uniform(0.5, 12.0)) for _ in range(15)]
    for marker, delay in moments:
        what = _kill_at(cmd, env, marker, delay)
        reopened = Engine(engine.settings, embedder=embedder)
        assert reopened.check().problems == [], what
        version = reopened.store.current_version()
        hits = reopened.search("How many vacation days does an employee get?", k=3)
        assert hits and hits[0].doc_id == "handbook.md", what
        counts = reopened.info().manifest["counts"]
        # Either the old version or the complete new one: never anything in between.
        assert (version == base_version and counts["documents"] == 9) or counts["documents"] == 69, (what, counts)
        reopened.close()
    # The next writer cleans up what the killed ones left and finishes the job.
    final = make_engine()
    report = final.index([sample_docs])
    assert report.failed == 0 and final.info().manifest["counts"]["documents"] == 69
    assert not [p for p in final.store.path.iterdir() if p.name.startswith(".staging")]
    named = {s.name for s in final.info().segments}
    assert {p.name for p in final.store.segments_root.iterdir()} <= named | {
        s.name for v in final.store.versions() for s in Manifest.read(final.store.path / v).segments}, \
        "segments left by killed writers are removed"
    assert final.check().problems == []
    check = subprocess.run([sys.executable, "-m", "rag", "check", "--index", str(engine.store.path)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "is sound" in check.stdout, check.stderr
