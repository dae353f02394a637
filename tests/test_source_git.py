"""Git sources (issue 34): real repositories written with dulwich, read where they are
(git+file://) and served over HTTP by dulwich's own smart-HTTP server on 127.0.0.1 (git+http://),
indexed by `Engine.index_source`: only the files whose blobs changed are fetched, what is gone is
removed, and a missing branch or an unreachable remote deletes nothing."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("dulwich")
from dulwich.index import commit_tree  # noqa: E402
from dulwich.objects import Blob, Commit  # noqa: E402
from dulwich.repo import Repo  # noqa: E402
from dulwich.server import DictBackend  # noqa: E402
from dulwich.web import WSGIRequestHandlerLogger, WSGIServerLogger, make_server, make_wsgi_chain  # noqa: E402

from rag import Engine, RagError, Settings  # noqa: E402
from rag.errors import ConfigError  # noqa: E402
from rag.sources.base import SourceError  # noqa: E402
from rag.sources.git import GitSource  # noqa: E402
from rag.sources.settings import SourceSettings  # noqa: E402

POLICIES = {f"docs/{name}.md": f"# {name.title()}\n\nThe {name} policy code is {code}.".encode() for name, code in (
    ("leave", "LV-11"), ("travel", "TR-22"), ("expenses", "EX-33"), ("security", "SE-44"), ("parking", "PK-55"))}
EXTRAS = {"docs/.drafts/secret.md": b"# Draft\n\nNot for the index.", ".github/notes.md": b"# CI notes",
          "docs/.hidden.md": b"# Hidden"}


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's remote caches in its own folder (never the user's ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _commit(repo: Repo, files: dict[str, bytes], branch: bytes = b"main", links: dict[str, bytes] | None = None) -> str:
    """A commit holding exactly `files` on `branch`, its parent the branch's tip."""
    entries = []
    for path, data in files.items():
        blob = Blob.from_string(data)
        repo.object_store.add_object(blob)
        entries.append((path.encode(), blob.id, 0o100644))
    for path, target in (links or {}).items():  # symbolic links: not documents
        blob = Blob.from_string(target)
        repo.object_store.add_object(blob)
        entries.append((path.encode(), blob.id, 0o120000))
    commit = Commit()
    commit.tree = commit_tree(repo.object_store, entries)
    ref = b"refs/heads/" + branch
    commit.parents = [repo.refs[ref]] if ref in repo.refs else []
    commit.author = commit.committer = b"Docs Team <docs@example.com>"
    commit.author_time = commit.commit_time = int(time.time())
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"docs update"
    repo.object_store.add_object(commit)
    repo.refs[ref] = commit.id
    return commit.id.decode()


def _repository(folder: Path, files: dict[str, bytes]) -> Repo:
    """A working repository whose default branch (HEAD) is main."""
    repo = Repo.init(str(folder), mkdir=True)
    repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/main")
    _commit(repo, files, links={"docs/link.md": b"leave.md"})
    return repo


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Serves a repository over smart HTTP (dulwich.web) on 127.0.0.1; returns its git+http URL.
    With `password`, only Basic credentials docs:password are let in."""
    servers = []

    def start(repo: Repo, password: str | None = None) -> str:
        app = make_wsgi_chain(DictBackend({"/handbook.git": repo}))
        if password is not None:
            app = _basic_auth(app, "docs", password)
        server = make_server("127.0.0.1", 0, app, handler_class=WSGIRequestHandlerLogger,
                             server_class=WSGIServerLogger)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"git+http://127.0.0.1:{server.server_port}/handbook.git"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _basic_auth(app: Callable, user: str, password: str) -> Callable:
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def guarded(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("HTTP_AUTHORIZATION") != expected:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Length", "0")])
            return [b""]
        return app(environ, start_response)
    return guarded


def _engine(tmp_path: Path, embedder) -> Engine:
    return Engine(Settings.load(overrides={"index.path": str(tmp_path / "index")}, environ={}), embedder=embedder)


@pytest.mark.parametrize("transport", ["file", "http"])
def test_a_branch_is_indexed_and_the_next_run_reads_exactly_the_changed_files(transport, tmp_path, embedder, serve,
                                                                              cache_home):
    repo = _repository(tmp_path / "handbook", POLICIES | EXTRAS | {"README.md": b"# Handbook\n\nRead me: RM-00."})
    url = f"git+file://{tmp_path / 'handbook'}" if transport == "file" else serve(repo)
    declared = SourceSettings(name="docs", url=url, options={"branch": "main"})
    engine = _engine(tmp_path, embedder)
    first = engine.index_source(declared)
    assert (first.listed, first.fetched, first.report.added) == (6, 6, 6)  # hidden files and the link left out
    (hit,) = engine.search("What is the travel policy code?", k=1)
    assert hit.doc_id == "docs/travel.md" and "TR-22" in hit.text and hit.metadata["collection"] == "docs"

    files = dict(POLICIES | EXTRAS | {"README.md": b"# Handbook\n\nRead me: RM-00."})
    for name in ("leave", "travel", "expenses"):
        files[f"docs/{name}.md"] = f"# {name.title()}\n\nThe {name} policy code is now {name.upper()}-99.".encode()
    del files["docs/parking.md"]
    files["docs/remote.md"] = b"# Remote\n\nRemote work code RW-66."
    _commit(repo, files)
    changed = engine.index_source(declared)
    report = changed.report
    assert (changed.fetched, report.added, report.updated, report.deleted, report.unchanged) == (4, 1, 3, 1, 2)
    ids = {d.doc_id for d in engine.documents(limit=100).documents}
    assert ids == {"README.md", "docs/leave.md", "docs/travel.md", "docs/expenses.md", "docs/security.md",
                   "docs/remote.md"}
    (hit,) = engine.search("What is the travel policy code?", k=1)
    assert "TRAVEL-99" in hit.text
    assert engine.document("docs/security.md", "docs")[0].chunks[0].text.endswith("SE-44.")  # untouched

    again = engine.index_source(declared)
    assert (again.fetched, again.report.added, again.report.updated, again.report.deleted) == (0, 0, 0, 0)
    assert again.report.unchanged == 6
    # A remote is fetched into the cache; a repository on this machine is read where it is.
    assert any(cache_home.rglob("repo.git")) == (transport == "http")


def test_a_missing_branch_or_an_unreachable_remote_deletes_nothing(tmp_path, embedder):
    _repository(tmp_path / "handbook", POLICIES)
    declared = SourceSettings(name="docs", url=f"git+file://{tmp_path / 'handbook'}", options={"branch": "main"})
    engine = _engine(tmp_path, embedder)
    assert engine.index_source(declared).report.added == 5
    gone = declared.model_copy(update={"options": {"branch": "release-9"}})
    with pytest.raises(RagError, match=r"no branch 'release-9' \(branches: main\); nothing was deleted"):
        engine.index_source(gone)
    down = declared.model_copy(update={"url": "git+http://127.0.0.1:9/x.git"})  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(RagError, match="cannot fetch http://127.0.0.1:9/x.git .*nothing was deleted"):
        engine.index_source(down)
    assert time.perf_counter() - started < 30
    nowhere = declared.model_copy(update={"url": f"git+file://{tmp_path / 'nowhere'}"})
    with pytest.raises(RagError, match="cannot open the repository"):
        engine.index_source(nowhere)
    assert engine.documents(limit=10).total == 5


@pytest.mark.parametrize("transport", ["file", "http"])
def test_the_default_branch_a_folder_and_the_commit_read(transport, tmp_path, serve):
    repo = _repository(tmp_path / "handbook", POLICIES | EXTRAS | {"README.md": b"# Handbook"})
    _commit(repo, {"docs/beta.md": b"# Beta"}, branch=b"beta")
    url = f"git+file://{tmp_path / 'handbook'}" if transport == "file" else serve(repo)
    source = GitSource(SourceSettings(name="docs", url=url, options={"path": "/docs/"}))
    try:
        items = list(source.items())
        assert [i.id for i in items] == sorted(p.removeprefix("docs/") for p in POLICIES)
        assert source.commit == repo.refs[b"refs/heads/main"].decode()  # HEAD -> main: the default branch
        travel = next(i for i in items if i.id == "travel.md")
        assert source.fetch(travel) == POLICIES["docs/travel.md"] and travel.size == len(POLICIES["docs/travel.md"])
        assert travel.version == Blob.from_string(POLICIES["docs/travel.md"]).id.decode()
    finally:
        source.close()
    beta = GitSource(SourceSettings(name="docs", url=url, options={"branch": "beta"}))
    try:
        assert [i.id for i in beta.items()] == ["docs/beta.md"]
    finally:
        beta.close()
    manuals = GitSource(SourceSettings(name="docs", url=url, options={"path": "manuals"}))
    with pytest.raises(SourceError, match="no folder 'manuals'"):
        list(manuals.items())
    manuals.close()
    with pytest.raises(SourceError, match="unknown option"):
        GitSource(SourceSettings(name="docs", url=url, options={"brnach": "main"}))


def test_credentials_come_from_the_environment_and_are_never_shown(tmp_path, serve, monkeypatch):
    repo = _repository(tmp_path / "handbook", POLICIES)
    url = serve(repo, password="s3cret-token-42")
    declared = SourceSettings(name="docs", url=url, credentials={"username": "GIT_USER", "password": "GIT_TOKEN"})
    monkeypatch.delenv("GIT_TOKEN", raising=False)
    monkeypatch.setenv("GIT_USER", "docs")
    with pytest.raises(ConfigError, match="GIT_TOKEN"):
        GitSource(declared)
    monkeypatch.setenv("GIT_TOKEN", "s3cret-token-42")
    source = GitSource(declared)
    try:
        assert len(list(source.items())) == 5
    finally:
        source.close()
    monkeypatch.setenv("GIT_TOKEN", "wrong-token-77")
    wrong = GitSource(declared)
    with pytest.raises(SourceError, match=r"refused the credentials\); nothing was deleted") as refused:
        list(wrong.items())
    wrong.close()
    in_url = GitSource(SourceSettings(name="docs", url=url.replace("//", "//docs:wrong-token-77@")))
    with pytest.raises(SourceError, match=r"http://\*\*\*@127.* refused the credentials") as refused_in_url:
        list(in_url.items())
    in_url.close()
    for message in (str(refused.value), str(refused_in_url.value)):
        assert "wrong-token-77" not in message and "s3cret" not in message
