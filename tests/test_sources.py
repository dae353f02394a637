"""Sources (issue 34, first part): a real S3 server on 127.0.0.1 (moto in server mode) and a
mounted folder through file://, read by `Engine.index_source` and `rag sources`: only what changed
is fetched, what is gone is removed, and a store that cannot be listed deletes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag import Engine, RagError, Settings
from rag.errors import ConfigError
from rag.sources.settings import SourceSettings, declared_sources

BUCKET = "corp-docs"
FILES = {f"handbook/{name}.md": f"# {name.title()}\n\nThe {name} policy code is {code}." for name, code in (
    ("leave", "LV-11"), ("travel", "TR-22"), ("expenses", "EX-33"), ("security", "SE-44"), ("parking", "PK-55"))}


@pytest.fixture(scope="module")
def s3_server():
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("DOCS_KEY_ID", "testing")
    monkeypatch.setenv("DOCS_SECRET", "testing")


def _declared(endpoint: str, **extra) -> SourceSettings:
    return SourceSettings(name="handbook", url=f"s3://{BUCKET}/handbook", endpoint=endpoint, region="us-east-1",
                          credentials={"key": "DOCS_KEY_ID", "secret": "DOCS_SECRET"}, **extra)


def _put(client, files: dict[str, str]) -> None:
    for key, text in files.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=text.encode())


def test_a_bucket_is_indexed_and_the_next_run_reads_exactly_what_changed(s3_server, credentials, tmp_path, embedder):
    endpoint, client = s3_server
    _put(client, FILES | {"handbook/.hidden.md": "secret", "handbook/tool.exe": "MZ", "other/readme.md": "# Other"})
    engine = Engine(Settings.load(overrides={"index.path": str(tmp_path / "index")}, environ={}), embedder=embedder)
    first = engine.index_source(_declared(endpoint))
    assert (first.listed, first.fetched, first.report.added) == (5, 5, 5)
    (hit,) = engine.search("What is the travel policy code?", k=1)
    assert hit.doc_id == "travel.md" and "TR-22" in hit.text and hit.metadata["collection"] == "handbook"

    again = engine.index_source(_declared(endpoint))  # nothing changed: listed, nothing fetched
    assert (again.fetched, again.report.added, again.report.updated, again.report.unchanged) == (0, 0, 0, 5)

    _put(client, {f"handbook/{n}.md": f"# {n.title()}\n\nThe {n} policy code is now {n.upper()}-99."
                  for n in ("leave", "travel", "expenses")} | {"handbook/remote.md": "# Remote\n\nRemote code RW-66."})
    client.delete_object(Bucket=BUCKET, Key="handbook/parking.md")
    changed = engine.index_source(_declared(endpoint))
    report = changed.report
    assert (changed.fetched, report.added, report.updated, report.deleted, report.unchanged) == (4, 1, 3, 1, 1)
    ids = {d.doc_id for d in engine.documents(limit=100).documents}
    assert ids == {"leave.md", "travel.md", "expenses.md", "security.md", "remote.md"}
    (hit,) = engine.search("What is the travel policy code?", k=1)
    assert "TRAVEL-99" in hit.text
    assert engine.document("security.md", "handbook")[0].chunks[0].text.endswith("SE-44.")  # untouched


def test_an_unreachable_store_or_an_emptied_listing_deletes_nothing(s3_server, credentials, tmp_path, embedder):
    endpoint, client = s3_server
    prefix = "gone-soon"
    _put(client, {f"{prefix}/{i}.md": f"# Note {i}\n\nNote number {i}." for i in range(4)})
    engine = Engine(Settings.load(overrides={"index.path": str(tmp_path / "index")}, environ={}), embedder=embedder)
    declared = SourceSettings(name="notes", url=f"s3://{BUCKET}/{prefix}", endpoint=endpoint, region="us-east-1",
                              credentials={"key": "DOCS_KEY_ID", "secret": "DOCS_SECRET"})
    assert engine.index_source(declared).report.added == 4
    down = declared.model_copy(update={"endpoint": "http://127.0.0.1:9"})  # nothing listens there
    with pytest.raises(RagError, match="nothing was deleted"):
        engine.index_source(down)
    for i in range(4):
        client.delete_object(Bucket=BUCKET, Key=f"{prefix}/{i}.md")
    emptied = engine.index_source(declared)  # a listing with nothing in it: the max-delete guard holds
    assert emptied.report.deleted == 0 and "nothing was deleted" in emptied.report.sync_stopped
    assert engine.documents(limit=10).total == 4


def test_credentials_are_named_by_environment_variable_and_a_missing_one_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    declared = SourceSettings(name="x", url="s3://b/p", credentials={"secret": "NOT_SET_ANYWHERE"})
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        declared.fsspec_options()
    config = tmp_path / "rag.toml"
    config.write_text('[[sources]]\nname = "a"\nurl = "file:///srv"\nevery = "15 minutes"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="every"):
        declared_sources(config)
    config.write_text('[[sources]]\nname = "a"\nurl = "file:///srv"\n[[sources]]\nname = "a"\nurl = "file:///x"\n',
                      encoding="utf-8")
    with pytest.raises(ConfigError, match="two sources"):
        declared_sources(config)


def test_rag_sources_run_and_list_a_mounted_folder(tmp_path, cli_env):
    share = tmp_path / "share"
    (share / "it").mkdir(parents=True)
    (share / "it" / "printers.md").write_text("# Printers\n\nPrinter PRN-7 is on floor 3.", encoding="utf-8")
    config = tmp_path / "rag.toml"
    config.write_text(f'[[sources]]\nname = "share"\nurl = "file://{share}"\nevery = "15m"\n', encoding="utf-8")
    index = tmp_path / "index"

    def rag(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rag", "--config", str(config), *args, "--index", str(index)],
                              capture_output=True, text=True, env=cli_env, timeout=300)

    ran = rag("sources", "run", "--json")
    assert ran.returncode == 0, ran.stderr
    (run,) = json.loads(ran.stdout)
    assert run["source"] == "share" and run["added"] == 1 and run["listed"] == 1
    listed = rag("sources", "list", "--json")
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "share" and row["last_run"]["ok"] and row["every"] == "15m" and row["next_run"]
    assert rag("sources", "run", "nosuch").returncode != 0
    assert "PRN-7" in rag("search", "Which floor is printer PRN-7 on?").stdout


def test_a_killed_run_leaves_the_index_and_the_sources_state_as_the_last_committed_run(tmp_path, cli_env):
    import signal
    import time

    from rag.sources.state import SourceState

    share = tmp_path / "share"
    share.mkdir()
    for i in range(5):
        (share / f"first-{i}.md").write_text(f"# First {i}\n\nFirst batch note {i}.", encoding="utf-8")
    config = tmp_path / "rag.toml"
    config.write_text(f'[[sources]]\nname = "share"\nurl = "file://{share}"\n', encoding="utf-8")
    index = tmp_path / "index"
    command = [sys.executable, "-m", "rag", "--config", str(config), "sources", "run", "--index", str(index)]
    assert subprocess.run(command, env=cli_env, capture_output=True, timeout=300).returncode == 0
    state = SourceState(index)
    committed, runs = state.versions("share"), state.last("share")
    for i in range(400):
        (share / f"second-{i}.md").write_text(f"# Second {i}\n\nSecond batch note {i} " + "words " * 40,
                                              encoding="utf-8")
    run = subprocess.Popen(command, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it while it holds the index's write lock: mid-run
        lock = (index / "LOCK").read_text().strip() if (index / "LOCK").exists() else ""
        if lock == str(run.pid):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the second run never started writing")
    time.sleep(1.0)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert state.versions("share") == committed and state.last("share") == runs  # nothing of it recorded
    engine = Engine(Settings.load(overrides={"index.path": str(index)}, environ={}))
    assert engine.documents(limit=10).total == 5
    again = subprocess.run([*command, "--json"], env=cli_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    (report,) = json.loads(again.stdout)
    assert report["added"] == 400 and report["unchanged"] == 5


def test_a_source_is_due_every_interval_or_at_its_cron_times():
    now = 1_800_000_000.0  # 2027-01-15 08:00 UTC
    assert SourceSettings(name="a", url="file:///x").next_run(None, now) is None  # on demand only
    every = SourceSettings(name="a", url="file:///x", every="15m")
    assert every.next_run(None, now) == now and every.next_run(now - 60, now) == now + 840
    nightly = SourceSettings(name="a", url="file:///x", cron="0 2 * * *")
    assert nightly.next_run(now, now) == now + 18 * 3600  # 02:00 UTC the next day
    for bad in ({"cron": "at two"}, {"every": "15m", "cron": "0 2 * * *"}):
        with pytest.raises(ValueError):
            SourceSettings(name="a", url="file:///x", **bad)
