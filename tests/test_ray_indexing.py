"""`rag index --ray` on a real local Ray cluster builds the index a single process builds: the same
documents, chunk ids, texts, metadata, BM25 postings and manifest, vectors within float tolerance;
changes are applied the same way; a job whose cluster dies leaves the live version as it was."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import threading
import time
from typing import Any

import numpy as np
import psutil
import pytest

ray = pytest.importorskip("ray")

from rag import Engine, RayOptions  # noqa: E402
from rag.errors import RagError  # noqa: E402

from conftest import write_sample_docs  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _stop_ray():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def cluster():
    """A local Ray cluster that runs reuse rather than start their own (started once, kept)."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)


def contents(engine: Engine) -> dict[str, Any]:
    """Everything an index holds that a run decides, vectors apart."""
    reader = engine.reader()
    conn = reader.chunks.conn
    chunks = conn.execute("SELECT id, collection, doc_id, ordinal, text, metadata, tokens FROM chunks ORDER BY id").fetchall()
    documents = conn.execute("SELECT collection, doc_id, source, origin, title, mtime, sha256, format, metadata, "
                             "content_of FROM documents ORDER BY collection, doc_id").fetchall()
    manifest = engine.info().manifest
    for key in ("created_at", "updated_at"):
        manifest.pop(key)
    for segment in manifest["segments"]:
        # The rows carry when they were indexed, and the vectors may differ in their last bits.
        segment["files"].pop("chunks.sqlite")
        segment["files"]["vectors.faiss"].pop("sha256")
    return {"chunks": chunks, "documents": documents, "manifest": manifest}


def vectors(engine: Engine) -> dict[int, np.ndarray]:
    found = {}
    for segment in engine.reader().segments:
        if segment.vectors is not None:
            live = np.setdiff1d(segment.ids, engine.reader().masked)
            found.update(zip(live.tolist(), segment.vectors.reconstruct(live)))
    return found


def decisions(report: Any) -> dict[str, Any]:
    """A run's report less where and how long."""
    return {k: v for k, v in report.as_dict().items() if k not in ("index", "seconds", "stages")}


def assert_same_index(local: Engine, on_ray: Engine) -> None:
    a, b = contents(local), contents(on_ray)
    assert a["manifest"] == b["manifest"]
    assert a["documents"] == b["documents"]
    assert a["chunks"] == b["chunks"]
    va, vb = vectors(local), vectors(on_ray)
    assert va.keys() == vb.keys() == {row[0] for row in a["chunks"]}
    # Other embedding batches pad differently: the same vectors to within the encoder's precision.
    x, y = np.stack([va[i] for i in sorted(va)]), np.stack([vb[i] for i in sorted(vb)])
    assert np.abs(x - y).max() < 1e-3 and np.min(np.sum(x * y, axis=1)) > 0.9999
    assert local.check().problems == [] and on_ray.check().problems == []


def test_files_on_ray_make_the_index_one_process_makes_and_change_it_the_same_way(cluster, make_engine, tmp_path):
    docs = write_sample_docs(tmp_path / "docs")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (docs / "same-as-notes.txt").write_bytes((docs / "notes.txt").read_bytes())  # stored once, found under both
    local = make_engine(**{"index.path": str(tmp_path / "local")})
    on_ray = make_engine(**{"index.path": str(tmp_path / "ray")})
    first = local.index([docs]), on_ray.index([docs], ray=RayOptions(workers=2))
    assert decisions(first[0]) == decisions(first[1])
    assert first[1].added == 10 and first[1].failed == 1
    assert on_ray.search("cafeteria opening hours", k=1)[0].metadata["also_in"] == ["same-as-notes.txt"]
    assert_same_index(local, on_ray)

    # A changed file, a new one, a removed one, and one unchanged (skipped by the actors too).
    (docs / "notes.txt").write_text("The cafeteria now opens at 08:00 on weekdays.\n", encoding="utf-8")
    (docs / "new.md").write_text("# Parking\n\nVisitors park on level -2.\n", encoding="utf-8")
    (docs / "prices.csv").unlink()
    second = local.index([docs], sync=True), on_ray.index([docs], sync=True, ray=RayOptions(workers=1))
    assert decisions(second[0]) == decisions(second[1])
    assert (second[1].added, second[1].updated, second[1].deleted) == (1, 1, 1) and second[1].unchanged >= 7
    assert_same_index(local, on_ray)
    hit = on_ray.search("When does the cafeteria open?", k=1)[0]
    assert "08:00" in hit.text and on_ray.search("visitor parking level", k=1)[0].doc_id == "new.md"


def test_an_ivf_index_on_ray_gets_vectors_encoded_by_the_workers(cluster, make_engine, tmp_path, caplog):
    """The first run trains the IVF index (its vectors come back as vectors); a later one sends
    the trained index to the actors, which return codes the writer stores as they are.

    The two later runs start from the same trained index (a copy of the local one): training is
    k-means over every bit of the vectors, and an fp32 encoder (a CPU without native bf16) does
    not give the same last bits to a text in batches of other shapes, so two trainings agree only
    to within the encoder's precision. Given one trained index, the codes must agree."""
    def notes(folder, numbers):
        folder.mkdir(exist_ok=True)
        for i in numbers:
            (folder / f"note-{i:03d}.txt").write_text(
                f"Ticket {i}: the conveyor in aisle {i % 9} reports fault code F{i:03d}; part P-{i * 13 % 97}.\n")
        return folder

    docs = notes(tmp_path / "docs", range(300))
    settings = {"index.factory": "IVF8,PQ8", "index.train_sample": 300, "index.nprobe": 8}
    local = make_engine(**settings, **{"index.path": str(tmp_path / "local")})
    first = make_engine(**settings, **{"index.path": str(tmp_path / "ray-first")})
    local.index([docs])
    with caplog.at_level("INFO", logger="rag.cluster.ray_indexing"):
        first.index([docs], ray=RayOptions(workers=2))
    assert "actors encode vectors" not in caplog.text  # nothing trained yet: the writer trains
    a, b = contents(local), contents(first)
    assert a["documents"] == b["documents"] and a["chunks"] == b["chunks"] and first.check().problems == []
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    on_ray = make_engine(**settings, **{"index.path": str(tmp_path / "ray")})
    notes(docs, range(300, 340))
    (docs / "note-007.txt").write_text("Ticket 7 was closed: the forklift battery was replaced.\n")
    caplog.clear()
    local.index([docs])
    with caplog.at_level("INFO", logger="rag.cluster.ray_indexing"):
        report = on_ray.index([docs], ray=RayOptions(workers=2))
    assert "actors encode vectors for the index's trained IVF8,PQ8" in caplog.text
    assert (report.added, report.updated, report.unchanged) == (40, 1, 299)
    a, b = contents(local), contents(on_ray)
    assert a["manifest"] == b["manifest"] and a["documents"] == b["documents"] and a["chunks"] == b["chunks"]
    # Codes of vectors equal to within the encoder's precision: the same codes, but for a vector
    # lying on the boundary between two codes (none expected in 341; one allowed).
    va, vb = vectors(local), vectors(on_ray)
    assert va.keys() == vb.keys()
    differing = sum(not np.array_equal(va[i], vb[i]) for i in va)
    assert differing <= 1, differing
    for question in ("forklift battery replaced", "fault code F321", "conveyor in aisle 4"):
        assert [h.chunk_id for h in local.search(question, k=5, mode="dense")] == \
               [h.chunk_id for h in on_ray.search(question, k=5, mode="dense")]
    assert on_ray.check().problems == []


def test_json_lines_records_on_ray(cluster, make_engine, tmp_path):
    records = b"".join(json.dumps({"id": f"kb-{i}", "text": f"Article {i}: the {w} procedure has {i} steps.",
                                   "team": "ops"}).encode() + b"\n"
                       for i, w in enumerate(["backup", "restore", "failover", "patching"] * 5)) + b"{not json\n"
    local = make_engine(**{"index.path": str(tmp_path / "local")})
    on_ray = make_engine(**{"index.path": str(tmp_path / "ray")})
    a = local.index_jsonl(io.BytesIO(records), "kb.jsonl")
    b = on_ray.index_jsonl(io.BytesIO(records), "kb.jsonl", ray=RayOptions(workers=2))
    assert (b.added, b.failed) == (20, 1) and b.problems[0].path == a.problems[0].path == "kb.jsonl line 21"
    assert_same_index(local, on_ray)


def _ray_workers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if "MapWorker" in " ".join(p.info["cmdline"] or [])]


def test_a_worker_killed_mid_job_is_restarted_and_the_job_completes(cluster, make_engine, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(160):
        (docs / f"note-{i:03d}.txt").write_text(f"Ticket {i}: the conveyor in aisle {i} reports fault F{i:03d}. " * 20)
    killed: list[int] = []
    killer = _kill_the_first_worker(killed, 1.0)
    on_ray = make_engine(**{"index.path": str(tmp_path / "ray")})
    report = on_ray.index([docs], ray=RayOptions(workers=1))
    killer.join()
    assert killed, "no Ray worker was seen to kill"
    assert report.added == 160 and report.failed == 0
    local = make_engine(**{"index.path": str(tmp_path / "local")})
    local.index([docs])
    assert_same_index(local, on_ray)


def _kill_the_first_worker(killed: list[int], wait: float) -> threading.Thread:
    """Kills the first Ray Data worker the next job starts (not one an earlier job left idle)."""
    earlier = {p.pid for p in _ray_workers()}

    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            new = [p for p in _ray_workers() if p.pid not in earlier]
            if new:
                time.sleep(wait)  # let it load the model and take a batch
                try:
                    os.kill(new[0].pid, signal.SIGKILL)
                    killed.append(new[0].pid)
                except ProcessLookupError:
                    earlier.add(new[0].pid)
            time.sleep(0.05)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def test_a_job_whose_worker_dies_without_retries_leaves_the_live_version_untouched(cluster, make_engine, tmp_path):
    docs = write_sample_docs(tmp_path / "docs")
    engine = make_engine()
    engine.index([docs])
    before = contents(engine)
    more = tmp_path / "more"
    more.mkdir()
    for i in range(200):
        (more / f"page-{i:03d}.md").write_text(f"# Page {i}\n\n" + f"Line {i} of a long runbook. " * 40)
    killed: list[int] = []
    killer = _kill_the_first_worker(killed, 1.0)
    with pytest.raises(RagError, match="the Ray job failed .*the index is unchanged"):
        engine.index([more], ray=RayOptions(workers=1, retries=0))
    killer.join()
    assert killed
    assert contents(engine) == before
    assert engine.check().problems == []
    assert not list((tmp_path / "index").rglob(".staging-*")), "the failed run left its staging folder"
    assert engine.index([more]).added == 200  # the next run works


def test_a_cluster_with_gpus_gives_each_actor_its_share_and_says_where_it_embedded(make_engine, tmp_path, caplog):
    """Ray's GPUs are resources it schedules by: a local cluster declaring one GPU runs the actors
    on it, two actors half a GPU each. This machine's torch has no CUDA, so they embed on the CPU,
    which the run reports as the misconfiguration it would be on a real GPU cluster."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        docs = write_sample_docs(tmp_path / "docs")
        local = make_engine(**{"index.path": str(tmp_path / "local")})
        on_ray = make_engine(**{"index.path": str(tmp_path / "ray")})
        local.index([docs])
        with caplog.at_level("INFO", logger="rag.cluster.ray_indexing"):
            on_ray.index([docs], ray=RayOptions(workers=2))
        assert "2 embedding actors (0.5 GPU each)" in caplog.text
        assert "an embedding actor on cpu (GPU 0)" in caplog.text
        assert "Ray gave an embedding actor GPU 0, but it embedded on the CPU" in caplog.text
        assert_same_index(local, on_ray)
    finally:
        ray.shutdown()  # the next test's cluster has no GPUs


def test_actors_skip_exactly_the_content_the_index_holds_under_each_id(cluster, make_settings, tmp_path):
    """The index's (id, content) pairs reach the actors as sorted 8-byte keys, not a dict of every id."""
    import pyarrow as pa

    from rag.cluster.ray_indexing import PrepareActor, content_key, content_keys, holds

    docs = write_sample_docs(tmp_path / "docs")
    keys = content_keys([("notes.txt", "a" * 64), ("handbook.md", "b" * 64)])
    assert keys.dtype == np.uint64 and keys.nbytes == 16 and list(keys) == sorted(keys)
    assert holds(keys, content_key("notes.txt", "a" * 64)) and not holds(keys, content_key("notes.txt", "b" * 64))
    assert not holds(keys, content_key("handbook.md", "a" * 64)) and not holds(content_keys([]), 0)

    import hashlib

    sha = hashlib.sha256((docs / "notes.txt").read_bytes()).hexdigest()
    settings = make_settings(**{"index.path": str(tmp_path / "index")})
    actor = PrepareActor(settings.model_dump_json(), None, content_keys([("notes.txt", sha)]), 1)
    units = [{"unit": n, "path": str(docs / name), "rel": name, "real": str(docs / name), "record": ""}
             for n, name in enumerate(["notes.txt", "handbook.md"])]
    rows = actor(pa.Table.from_pylist(units))
    payloads = {json.loads(p)["document"]["doc_id"]: json.loads(p) for p, kind in zip(rows["payload"], rows["kind"])
                if kind == "document"}
    assert payloads["notes.txt"]["document"]["metadata"]["sha256"] == sha, "the key is the loader's own content hash"
    assert payloads["notes.txt"]["chunks"] is None, "held under its id: not chunked, not embedded"
    assert payloads["handbook.md"]["chunks"], "not held: prepared"


def test_ray_without_the_package_names_the_extra(make_engine, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    docs = write_sample_docs(tmp_path / "docs")
    with pytest.raises(RagError, match=r"pip install 'rag\[ray\]'"):
        make_engine().index([docs], ray=RayOptions())
    shutil.rmtree(docs)


def test_rag_index_ray_on_the_command_line(sample_docs, cli_env, tmp_path):
    """`rag index --ray` starts a local cluster of its own, indexes, stops it; `rag check` is clean."""
    import subprocess
    import sys

    def rag(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rag", *args], env=cli_env, capture_output=True, text=True,
                              timeout=300)

    done = rag("index", str(sample_docs), "--ray-workers", "1", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["documents"], summary["failed"]) == (9, 0)
    assert "Dataset" not in done.stderr  # Ray Data's own INFO lines are kept out of the way
    assert "Progress bars disabled" not in done.stderr  # so is its warning that its bars are off
    assert rag("check").returncode == 0
    again = json.loads(rag("index", str(sample_docs), "--ray", "--json").stdout)
    assert (again["documents"], again["unchanged"]) == (0, 9)
    assert rag("search", "lidar error code", "-k", "1", "--json").returncode == 0
