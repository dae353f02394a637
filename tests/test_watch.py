"""`rag index FOLDER --watch` (rag.indexing.watch): a real watcher on a real folder, the real
model and index; changes searchable within seconds, debounced, under the index's lock."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rag.index.lock import WriteLock
from rag.indexing.watch import Batch, Waiting, Watching, WatchResult, watch

DEBOUNCE = 0.3
WITHIN = 10.0  # seconds a change may take to be searchable (the bound)


class Watch:
    """The watch loop on its own thread, with every event it reported."""

    def __init__(self, engine, folder: Path) -> None:
        self.engine, self.folder = engine, folder
        self.events: list = []
        self.stop = threading.Event()
        self.result: WatchResult | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.result = watch(self.engine, [self.folder], self.events.append, self.stop, DEBOUNCE,
                            first=lambda: self.engine.index([self.folder], sync=True))

    def start(self) -> "Watch":
        self.thread.start()
        wait_for(lambda: any(isinstance(e, Watching) for e in self.events), 120, "the watch to start")
        return self

    def batches(self) -> list[Batch]:
        return [e for e in self.events if isinstance(e, Batch) and not e.first]

    def finish(self) -> WatchResult:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the watch did not stop"
        assert self.result is not None
        return self.result


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def ids(engine) -> set[str]:
    return {d.doc_id for d in engine.reader().chunks.rows.documents_in(engine.settings.ingest.collection)}


def found(engine, question: str, word: str) -> bool:
    return any(word in hit.text for hit in engine.search(question, k=3))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in [("walrus.md", "The walrus lives in the arctic sea and eats clams."),
                       ("heron.md", "The grey heron waits motionless at the river bank."),
                       ("badger.md", "The badger digs a sett under the old oak tree."),
                       ("otter.txt", "The otter floats on its back to crack shells.")]:
        (docs / name).write_text(f"# {name}\n\n{text}\n", encoding="utf-8")
    return docs


@pytest.fixture
def watching(make_engine, folder: Path) -> Iterator[Watch]:
    running = Watch(make_engine(), folder).start()
    yield running
    running.finish()


def test_new_changed_renamed_and_deleted_files_are_followed_within_seconds(watching: Watch, folder: Path):
    engine = watching.engine
    assert ids(engine) == {"walrus.md", "heron.md", "badger.md", "otter.txt"}

    (folder / "zebra.md").write_text("# Zebra\n\nThe zebra crossing is painted in white stripes.\n")
    took = wait_for(lambda: found(engine, "zebra crossing stripes", "zebra"), WITHIN, "the new file")
    assert took < WITHIN

    (folder / "heron.md").write_text("# Heron\n\nThe heron moved to the lighthouse on the cliff.\n")
    wait_for(lambda: found(engine, "heron lighthouse cliff", "lighthouse"), WITHIN, "the changed file")
    assert not found(engine, "heron waits motionless at the river bank", "motionless")

    (folder / "badger.md").unlink()
    wait_for(lambda: "badger.md" not in ids(engine), WITHIN, "the deleted file to leave the index")

    (folder / "burrows").mkdir()
    (folder / "otter.txt").rename(folder / "burrows" / "otter.txt")
    wait_for(lambda: "burrows/otter.txt" in ids(engine) and "otter.txt" not in ids(engine), WITHIN, "the rename")
    assert ids(engine) == {"walrus.md", "heron.md", "zebra.md", "burrows/otter.txt"}
    assert not any(b.error for b in watching.batches())
    kinds = {what for b in watching.batches() for what, _ in b.changes}
    assert {"added", "modified", "deleted"} <= kinds


def test_files_only_rag_ignores_start_no_run(watching: Watch, folder: Path):
    (folder / ".ragignore").write_text("drafts/\n")
    wait_for(lambda: len(watching.batches()) == 1, WITHIN, "the .ragignore change's run")
    (folder / "drafts").mkdir()
    for name in [".#walrus.md", "walrus.md~", ".walrus.md.swp", "4913", "notes.tmp", ".hidden.md",
                 "drafts/plan.md"]:
        (folder / name).write_text("scratch\n")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x.md").write_text("scratch\n")
    time.sleep(DEBOUNCE * 2 + 2)
    assert len(watching.batches()) == 1, [b.changes for b in watching.batches()]
    (folder / "kept.md").write_text("# Kept\n\nThis one is read.\n")
    wait_for(lambda: len(watching.batches()) == 2, WITHIN, "a visible file's run after the ignored ones")
    assert watching.batches()[-1].changes == (("added", "kept.md"),)
    assert "kept.md" in ids(watching.engine)
    assert "drafts/plan.md" not in ids(watching.engine)


def test_a_burst_of_twenty_files_is_one_or_two_runs(watching: Watch, folder: Path):
    for i in range(20):
        (folder / f"note-{i:02d}.md").write_text(f"# Note {i}\n\nMeeting note number {i} about item {i * 7}.\n")
    wanted = {f"note-{i:02d}.md" for i in range(20)}
    wait_for(lambda: wanted <= ids(watching.engine), WITHIN, "the burst to be indexed")
    time.sleep(DEBOUNCE * 3)
    runs = watching.batches()
    assert 1 <= len(runs) <= 2, [b.describe() for b in runs]
    assert sum(b.report.added for b in runs if b.report) == 20


def test_waits_for_another_writer_and_loses_nothing(watching: Watch, folder: Path):
    lock = WriteLock(watching.engine.store.path)
    lock.acquire()  # another writer: its own open file, so the watch's flock() is refused
    try:
        (folder / "late.md").write_text("# Late\n\nThe ferry leaves at dawn from pier nine.\n")
        wait_for(lambda: any(isinstance(e, Waiting) for e in watching.events), WITHIN, "the watch to wait")
        (folder / "later.md").write_text("# Later\n\nThe night bus stops at the station square.\n")
        time.sleep(1)
        assert "late.md" not in ids(watching.engine)
    finally:
        lock.release()
    wait_for(lambda: {"late.md", "later.md"} <= ids(watching.engine), WITHIN, "the changes after the lock")


def test_stop_while_the_lock_is_held_ends_at_once_and_names_what_is_not_indexed(make_engine, folder: Path):
    running = Watch(make_engine(), folder).start()
    lock = WriteLock(running.engine.store.path)
    lock.acquire()
    try:
        (folder / "late.md").write_text("# Late\n\nThe ferry leaves at dawn.\n")
        wait_for(lambda: any(isinstance(e, Waiting) for e in running.events), WITHIN, "the watch to wait")
        result = running.finish()
    finally:
        lock.release()
    assert ("added", "late.md") in result.unindexed


def test_cli_watch_indexes_a_new_file_and_stops_cleanly_on_sigterm(tmp_path: Path, folder: Path, cli_env):
    child = subprocess.Popen([sys.executable, "-m", "rag", "index", str(folder), "--watch"], env=cli_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    for stream in (child.stdout, child.stderr):
        threading.Thread(target=lambda s=stream: [lines.put(line) for line in s], daemon=True).start()

    def read_until(text: str, seconds: float) -> list[str]:
        seen, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=0.2))
            except queue.Empty:
                continue
            if text in seen[-1]:
                return seen
        raise AssertionError(f"no {text!r} in {seen}")

    try:
        first = read_until("watching", 180)
        assert any("4 documents indexed (4 new" in line for line in first), first
        (folder / "zebra.md").write_text("# Zebra\n\nThe zebra crossing is painted in white stripes.\n")
        batch = read_until("documents/s", WITHIN)[-1]
        assert "1 added: zebra.md" in batch and "1 documents indexed (1 new" in batch, batch
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
