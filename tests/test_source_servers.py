"""Sources on file servers (issue 34): a real SFTP server (asyncssh) and a real WebDAV server
(wsgidav under cheroot) on 127.0.0.1, each serving a temporary folder, read through
`Engine.index_source`: only what changed is fetched, what is gone is removed, a stopped server or
a refused password deletes nothing and never shows the password, and an SFTP server whose host
key is not known is not spoken to."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rag import Engine, RagError, Settings
from rag.sources.settings import SourceSettings

PASSWORD = "s3cr3t-Pa55word"
NAMES = (("leave", "LV-11"), ("travel", "TR-22"), ("expenses", "EX-33"), ("security", "SE-44"), ("parking", "PK-55"))


def _write(folder: Path, files: dict[str, str], later: float = 0.0) -> None:
    """Writes files; `later` moves their mtime on, as a real edit a while after the last one would
    (SFTP gives mtimes in whole seconds)."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if later:
            os.utime(path, (time.time() + later, time.time() + later))


def _exercise(engine: Engine, declared: SourceSettings, folder: Path) -> None:
    """Index five files, re-run unchanged, change 3 / delete 1 / add 1: the same story for every server."""
    _write(folder, {f"{n}.md": f"# {n.title()}\n\nThe {n} policy code is {c}." for n, c in NAMES}
           | {".hidden.md": "secret"})
    first = engine.index_source(declared)
    assert (first.listed, first.fetched, first.report.added) == (5, 5, 5)
    (hit,) = engine.search("What is the travel policy code?", k=1)
    assert hit.doc_id == "travel.md" and "TR-22" in hit.text

    again = engine.index_source(declared)
    assert (again.listed, again.fetched, again.report.unchanged) == (5, 0, 5)

    _write(folder, {f"{n}.md": f"# {n.title()}\n\nThe {n} policy code is now {n.upper()}-99."
                    for n in ("leave", "travel", "expenses")} | {"remote.md": "# Remote\n\nRemote code RW-66."}, 5)
    (folder / "parking.md").unlink()
    changed = engine.index_source(declared)
    report = changed.report
    assert (changed.fetched, report.added, report.updated, report.deleted, report.unchanged) == (4, 1, 3, 1, 1)
    assert {d.doc_id for d in engine.documents(limit=100).documents} == {
        "leave.md", "travel.md", "expenses.md", "security.md", "remote.md"}
    (hit,) = engine.search("What is the travel policy code?", k=1)
    assert "TRAVEL-99" in hit.text


def _refused(engine: Engine, declared: SourceSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong password: a RagError that names no password, and nothing deleted."""
    monkeypatch.setenv("FILES_PASSWORD", "wrong-" + PASSWORD)
    with pytest.raises(RagError) as refused:
        engine.index_source(declared)
    assert PASSWORD not in str(refused.value) and "wrong-" not in str(refused.value)
    monkeypatch.setenv("FILES_PASSWORD", PASSWORD)
    assert engine.documents(limit=100).total == 5


def _stopped(engine: Engine, declared: SourceSettings, stop: Callable[[], None]) -> None:
    """The server gone: a RagError saying nothing was deleted, and all five documents still there."""
    stop()
    with pytest.raises(RagError, match="nothing was deleted"):
        engine.index_source(declared)
    assert engine.documents(limit=100).total == 5


@pytest.fixture
def engine(tmp_path: Path, embedder) -> Iterator[Engine]:
    engine = Engine(Settings.load(overrides={"index.path": str(tmp_path / "index")}, environ={}), embedder=embedder)
    yield engine
    engine.close()


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILES_PASSWORD", PASSWORD)


# -- SFTP ------------------------------------------------------------------------------------------

class SFTPServer:
    """asyncssh serving `root` as / over SFTP to alice (password auth), on its own event loop."""

    def __init__(self, root: Path) -> None:
        import asyncssh

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.key = asyncssh.generate_private_key("ssh-ed25519")

        class Alice(asyncssh.SSHServer):
            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                return username == "alice" and password == PASSWORD

        self.acceptor = self._run(asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[self.key], server_factory=Alice,
            sftp_factory=lambda channel: asyncssh.SFTPServer(channel, chroot=str(root))))
        self.port: int = self.acceptor.get_port()

    def _run(self, awaitable):  # noqa: ANN001, ANN202
        async def awaited():  # noqa: ANN202 - asyncssh.listen gives an awaitable, not a coroutine
            return await awaitable

        return asyncio.run_coroutine_threadsafe(awaited(), self.loop).result(10)

    def known_hosts(self, path: Path) -> Path:
        """A known_hosts file listing this server's key, as `ssh-keyscan` would write it."""
        path.write_text(f"[127.0.0.1]:{self.port} {self.key.export_public_key().decode().strip()}\n")
        return path

    def stop(self) -> None:
        if self.loop.is_running():
            self.acceptor.close()
            self._run(self.acceptor.wait_closed())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[SFTPServer]:
    pytest.importorskip("paramiko")
    pytest.importorskip("asyncssh")
    (tmp_path / "srv" / "handbook").mkdir(parents=True)
    server = SFTPServer(tmp_path / "srv")
    yield server
    server.stop()


def _sftp_source(server: SFTPServer, known_hosts: Path) -> SourceSettings:
    return SourceSettings(name="handbook", url="sftp://127.0.0.1/handbook",
                          options={"port": server.port, "username": "alice", "known_hosts": str(known_hosts),
                                   "look_for_keys": False, "allow_agent": False},
                          credentials={"password": "FILES_PASSWORD"})


def test_an_sftp_folder_is_indexed_and_re_read_only_where_it_changed(sftp, engine, password, tmp_path,
                                                                      monkeypatch):
    declared = _sftp_source(sftp, sftp.known_hosts(tmp_path / "known_hosts"))
    _exercise(engine, declared, tmp_path / "srv" / "handbook")
    _refused(engine, declared, monkeypatch)
    _stopped(engine, declared, sftp.stop)


def test_an_sftp_server_whose_host_key_is_not_known_is_refused_before_the_password_is_sent(
        sftp, engine, password, tmp_path):
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    for listed in ("", f"[127.0.0.1]:{sftp.port} {other}\n"):  # not listed; listed with another key
        (tmp_path / "known_hosts").write_text(listed)
        with pytest.raises(RagError, match="known_hosts") as refused:
            engine.index_source(_sftp_source(sftp, tmp_path / "known_hosts"))
        assert "nothing was deleted" in str(refused.value) and PASSWORD not in str(refused.value)


# -- WebDAV ----------------------------------------------------------------------------------------

class WebDAVServer:
    """wsgidav serving `root` at / to alice (HTTP basic auth), under cheroot in a thread."""

    def __init__(self, root: Path) -> None:
        from cheroot import wsgi
        from wsgidav.wsgidav_app import WsgiDAVApp

        app = WsgiDAVApp({
            "provider_mapping": {"/": str(root)}, "verbose": 0, "logging": {"enable": False},
            "simple_dc": {"user_mapping": {"*": {"alice": {"password": PASSWORD}}}},
            "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False}})
        self.server = wsgi.Server(("127.0.0.1", 0), app, numthreads=4)
        self.server.prepare()
        self.port: int = self.server.bind_addr[1]
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(5)


@pytest.fixture
def webdav(tmp_path: Path) -> Iterator[WebDAVServer]:
    pytest.importorskip("webdav4")
    pytest.importorskip("wsgidav")
    (tmp_path / "dav" / "team" / "handbook").mkdir(parents=True)
    server = WebDAVServer(tmp_path / "dav")
    yield server
    server.stop()


def test_a_webdav_folder_is_indexed_and_re_read_only_where_it_changed(webdav, engine, password, tmp_path,
                                                                      monkeypatch):
    declared = SourceSettings(name="handbook", url=f"webdav+http://127.0.0.1:{webdav.port}/team/handbook",
                              options={"username": "alice"}, credentials={"password": "FILES_PASSWORD"})
    _exercise(engine, declared, tmp_path / "dav" / "team" / "handbook")
    _refused(engine, declared, monkeypatch)
    _stopped(engine, declared, webdav.stop)
