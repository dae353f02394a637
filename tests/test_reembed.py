"""`rag index --reembed --model DIR` (issue 35, "Switching"): every vector made again by another
model in one atomic version, rows and BM25 kept; the index then takes the new model and refuses
the old one; a re-embed killed mid-way leaves the old version live and sound."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rag import Engine, Settings
from rag.embed import Embedder, resolve_model
from rag.errors import IndexMismatchError
from rag.index.manifest import Manifest


def tuned_model(tmp_path: Path) -> Path:
    """The bundled MiniLM under another folder name (its files linked, not copied): to rag, another model."""
    _, source = resolve_model("all-MiniLM-L6-v2")
    target = tmp_path / "tuned-minilm"
    for file in source.rglob("*"):
        if file.is_file():
            (target / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(file, target / file.relative_to(source))
    return target


def vectors_by_id(engine: Engine) -> dict[int, np.ndarray]:
    reader = engine.store.open_reader()
    try:
        found = {}
        for segment in reader.segments:
            if segment.vectors is not None:
                for i, vector in zip(segment.ids, segment.vectors.reconstruct(segment.ids)):
                    found[int(i)] = vector
        return found
    finally:
        reader.close()


def bm25(engine: Engine, question: str) -> list[tuple[str, int, float]]:
    return [(h.doc_id, h.chunk_id, round(h.score, 6)) for h in engine.search(question, k=5, mode="bm25")]


def test_reembed_rewrites_only_the_vectors_and_switches_the_model(indexed, make_settings, tmp_path):
    engine = indexed()
    before = vectors_by_id(engine)
    lexical = bm25(engine, "paid vacation days a year")
    old_version = engine.store.live_version()
    model = tuned_model(tmp_path)
    settings = make_settings(**{"embedding.model": str(model)})
    new = Embedder(settings.embedding)

    version = engine.reembed(new)

    assert version != old_version and engine.check().ok
    manifest = Manifest.read(engine.store.path / version)
    assert manifest.embedding["model"] == "tuned-minilm" and manifest.embedding["model_path"] == str(model)
    assert len(manifest.embedding["model_sha256"]) == 64 and len(manifest.segments) == 1
    assert manifest.counts["vectors"] == manifest.counts["chunks"] == len(before)
    after = vectors_by_id(engine)
    assert after.keys() == before.keys()  # the same chunks, heading prefixes included, give the same vectors
    assert min(float(before[i] @ after[i]) for i in before) > 0.999
    with pytest.raises(IndexMismatchError, match=f"set embedding.model = '{model}'"):
        engine.search("How many vacation days?")

    switched = Engine(settings, embedder=new)
    try:
        assert bm25(switched, "paid vacation days a year") == lexical
        hits = switched.search("How many days of paid vacation do employees get?", k=3, mode="dense")
        assert "27 days" in " ".join(h.text for h in hits)
        assert switched.info().manifest["counts"]["chunks"] == len(before)
    finally:
        switched.close()


def test_a_reembed_with_other_settings_makes_other_vectors_and_later_writes_keep_the_model_record(
        indexed, make_settings, tmp_path, sample_docs):
    engine = indexed()
    before = vectors_by_id(engine)
    model = tuned_model(tmp_path)
    settings = make_settings(**{"embedding.model": str(model), "embedding.passage_prefix": "passage: "})
    new = Embedder(settings.embedding)
    engine.reembed(new)
    after = vectors_by_id(engine)
    assert after.keys() == before.keys() and min(float(before[i] @ after[i]) for i in before) < 0.99

    switched = Engine(settings, embedder=new)
    try:
        (sample_docs / "extra.md").write_text("# Extra\n\nThe parking garage closes at 22:00.", encoding="utf-8")
        assert switched.index([sample_docs]).added == 1  # the index takes documents embedded by the new model
        manifest = Manifest.read(switched.store.path / switched.store.live_version())
        assert manifest.embedding["model_path"] == str(model) and "model_sha256" in manifest.embedding
        assert switched.check().ok
    finally:
        switched.close()


def test_a_killed_reembed_leaves_the_old_version_live(make_engine, tmp_path, cli_env):
    engine = make_engine()
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(300):
        (docs / f"note-{i}.md").write_text(f"# Note {i}\n\nMaintenance note {i} about pump P-{i} " + "valve " * 60
                                           + f"\n\n## Details\n\nThe pump P-{i} runs at {i * 7} rpm. " + "flow " * 60,
                                           encoding="utf-8")
    engine.index([docs])
    live, chunks = engine.store.live_version(), engine.info().manifest["counts"]["chunks"]
    assert chunks >= 300
    index = engine.store.path
    command = [sys.executable, "-m", "rag", "index", "--reembed", "--model", str(tuned_model(tmp_path)),
               "--index", str(index)]
    run = subprocess.Popen(command, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it while it holds the index's write lock: mid-way
        lock = (index / "LOCK").read_text().strip() if (index / "LOCK").exists() else ""
        if lock == str(run.pid):
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the re-embed never started writing")
    time.sleep(0.5)
    run.send_signal(signal.SIGKILL)
    run.wait()

    reopened = Engine(Settings.load(overrides={"index.path": str(index)}, environ={}), embedder=engine.embedder)
    try:
        assert reopened.store.live_version() == live
        assert reopened.check().ok, reopened.check()
        assert reopened.info().manifest["counts"]["chunks"] == chunks
        assert "P-42" in reopened.search("pump P-42 rpm", k=3)[0].text
        # The next write cleans up after it: a re-embed run again goes through.
        done = subprocess.run([*command, "--json"], env=cli_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert "embedding.model" in done.stderr or '"version"' in done.stdout
        with pytest.raises(IndexMismatchError):
            reopened.search("pump P-42 rpm")
    finally:
        reopened.close()


def test_an_ivf_index_is_trained_again_on_the_new_vectors(indexed, make_settings, tmp_path, sample_docs):
    engine = indexed(**{"index.factory": "IVF4,Flat", "index.train_sample": 1000})
    old = Manifest.read(engine.store.path / engine.store.live_version())
    model = tuned_model(tmp_path)
    settings = make_settings(**{"embedding.model": str(model), "index.factory": "IVF4,Flat"})
    new = Embedder(settings.embedding)
    manifest = Manifest.read(engine.store.path / engine.reembed(new))
    assert old.template and manifest.template and manifest.template != old.template
    assert engine.check().ok
    switched = Engine(settings, embedder=new)
    try:
        (sample_docs / "extra.md").write_text("# Extra\n\nThe parking garage closes at 22:00.", encoding="utf-8")
        assert switched.index([sample_docs]).added == 1  # its segment starts from the new template
        assert switched.check().ok
        assert "22:00" in switched.search("When does the parking garage close?", k=3)[0].text
    finally:
        switched.close()
