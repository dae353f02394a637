"""Web pages as a source (issue 34): a real HTTP site on 127.0.0.1 (http.server, threaded, served
from a temporary folder) read by `Engine.index_source`: robots.txt obeyed, only the site's host
followed, pages read without their navigation, a linked PDF indexed through its loader and not read
again while unchanged, and a site that cannot be listed whole deleting nothing."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import make_pdf
from rag import Engine, RagError, Settings
from rag.sources.base import SourceError
from rag.sources.settings import SourceSettings
from rag.sources.web import WebSource

BOILERPLATE = "Skip to content SITE-CHROME"


def _page(title: str, text: str, links: dict[str, str] | None = None, head: str = "") -> str:
    """A page as an intranet's CMS makes it: header, navigation and footer around the main text."""
    items = "".join(f'<li><a href="{href}">{label}</a></li>' for href, label in (links or {}).items())
    return (f"<!doctype html><html><head><title>{title}</title>{head}</head><body>"
            f'<header><a href="/">Intranet</a> {BOILERPLATE} header</header>'
            f'<nav><a href="/">Home</a> <a href="/docs/">Documents</a> {BOILERPLATE} nav</nav>'
            f"<main><h1>{title}</h1><p>{text}</p><ul>{items}</ul></main>"
            f"<footer>{BOILERPLATE} footer, ACME Corp</footer></body></html>")


class _Handler(SimpleHTTPRequestHandler):
    """Files of the site's folder (`/docs/leave` serves docs/leave.html); every request recorded."""

    def translate_path(self, path: str) -> str:
        real = super().translate_path(path)
        return real + ".html" if not os.path.exists(real) and os.path.exists(real + ".html") else real

    def send_head(self):  # type: ignore[no-untyped-def]
        server = self.server
        server.requests.append((self.command, self.path.split("?")[0]))  # type: ignore[attr-defined]
        if server.fail:  # type: ignore[attr-defined]
            self.send_error(server.fail)  # type: ignore[attr-defined]
            return None
        expected = server.auth  # type: ignore[attr-defined]
        if expected and self.headers.get("Authorization") != "Basic " + base64.b64encode(expected.encode()).decode():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="intranet"')
            self.end_headers()
            return None
        return super().send_head()

    def send_header(self, keyword: str, value: str) -> None:
        if keyword == "Last-Modified" and self.server.plain:  # type: ignore[attr-defined]
            return  # a dynamic site: no validators, so the source hashes what it reads
        super().send_header(keyword, value)

    def log_message(self, format: str, *args: object) -> None:
        return None


class Site:
    """A running site: its folder, its URL and the requests it answered."""

    def __init__(self, folder: Path, auth: str = "", plain: bool = False) -> None:
        self.folder = folder
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
        self.server.requests, self.server.fail = [], 0  # type: ignore[attr-defined]
        self.server.auth, self.server.plain = auth, plain  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.server.requests  # type: ignore[attr-defined,no-any-return]

    def write(self, files: dict[str, str | bytes], later: float = 0) -> None:
        """Writes the files, dated `later` seconds on (an edit made after the last run)."""
        for name, content in files.items():
            path = self.folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
            if later:
                os.utime(path, (time.time() + later, time.time() + later))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    served = Site(tmp_path / "site")
    served.folder.mkdir()
    yield served
    served.server.shutdown()
    served.server.server_close()


def _intranet(site: Site) -> None:
    """Home -> /docs (a redirect to /docs/) -> four policy pages; a PDF, a page robots.txt keeps
    out, another host and a mail address linked from home."""
    site.write({
        "robots.txt": "User-agent: *\nDisallow: /private/\n",
        "index.html": _page("Intranet home", "Welcome to the ACME intranet.", {
            "/docs": "Policies", "files/handbook.pdf": "Handbook (PDF)", "/private/salaries.html": "Salaries",
            "https://elsewhere.invalid/page": "Partner site", "mailto:hr@acme.test": "Mail HR", "#top": "Top"}),
        "docs/index.html": _page("Policies", "All company policies.", {
            "leave": "Leave", "travel.html": "Travel", "/docs/expenses": "Expenses", "security": "Security"}),
        "private/salaries.html": _page("Salaries", "Secret salary table SAL-00."),
        **{f"docs/{name}.html": _page(f"{name.title()} policy", f"The {name} policy code is {code}.")
           for name, code in (("leave", "LV-11"), ("travel", "TR-22"), ("expenses", "EX-33"), ("security", "SE-44"))},
    })
    (site.folder / "files").mkdir()
    make_pdf(site.folder / "files" / "handbook.pdf", ["The employee handbook PDF says the badge code is HB-77."],
             title="Employee handbook")


def test_a_site_is_crawled_and_the_next_run_reads_exactly_what_changed(site, tmp_path, embedder):
    _intranet(site)
    engine = Engine(Settings.load(overrides={"index.path": str(tmp_path / "index")}, environ={}), embedder=embedder)
    declared = SourceSettings(name="intranet", url=site.url + "/")
    first = engine.index_source(declared)
    ids = {d.doc_id for d in engine.documents(limit=100).documents}
    assert ids == {"index.html", "docs/index.html", "docs/leave.html", "docs/travel.html", "docs/expenses.html",
                   "docs/security.html", "files/handbook.pdf"}
    assert (first.listed, first.fetched, first.report.added) == (7, 7, 7)
    (hit,) = engine.search("What is the badge code in the employee handbook?", k=1)
    assert hit.doc_id == "files/handbook.pdf" and "HB-77" in hit.text and hit.metadata["collection"] == "intranet"
    (hit,) = engine.search("What is the travel policy code?", k=1)
    assert hit.doc_id == "docs/travel.html" and "TR-22" in hit.text
    for doc_id in ids:  # header, navigation and footer are not the page's text
        assert all("SITE-CHROME" not in c.text for c in engine.document(doc_id, "intranet")[0].chunks)
    assert not [p for _, p in site.requests if p.startswith("/private/")]  # robots.txt keeps it out
    # Pages are read once while listing (fetch() reuses that copy); the PDF gets a HEAD, then one GET.
    gets = [p for m, p in site.requests if m == "GET"]
    assert len(gets) == len(set(gets)) and ("HEAD", "/files/handbook.pdf") in site.requests

    site.requests.clear()
    again = engine.index_source(declared)
    assert (again.fetched, again.report.added, again.report.updated, again.report.unchanged) == (0, 0, 0, 7)
    assert ("GET", "/files/handbook.pdf") not in site.requests  # unchanged: its headers say so

    site.write({"docs/leave.html": _page("Leave policy", "The leave policy code is now LEAVE-99."),
                "docs/travel.html": _page("Travel policy", "The travel policy code is now TRAVEL-99."),
                "docs/index.html": _page("Policies", "All company policies.", {
                    "leave": "Leave", "travel.html": "Travel", "/docs/expenses": "Expenses", "remote": "Remote"}),
                "docs/remote.html": _page("Remote policy", "The remote work code is RW-66.")}, later=60)
    (site.folder / "docs" / "security.html").unlink()
    changed = engine.index_source(declared)
    report = changed.report
    assert (changed.fetched, report.added, report.updated, report.deleted, report.unchanged) == (4, 1, 3, 1, 3)
    assert not report.failed
    ids = {d.doc_id for d in engine.documents(limit=100).documents}
    assert ids == {"index.html", "docs/index.html", "docs/leave.html", "docs/travel.html", "docs/expenses.html",
                   "docs/remote.html", "files/handbook.pdf"}
    (hit,) = engine.search("What is the travel policy code?", k=1)
    assert "TRAVEL-99" in hit.text
    assert any("EX-33" in c.text for c in engine.document("docs/expenses.html", "intranet")[0].chunks)  # untouched
    assert not [p for _, p in site.requests if p.startswith("/private/")]


def test_a_site_that_cannot_be_listed_whole_deletes_nothing(site, tmp_path, embedder):
    _intranet(site)
    engine = Engine(Settings.load(overrides={"index.path": str(tmp_path / "index")}, environ={}), embedder=embedder)
    declared = SourceSettings(name="intranet", url=site.url + "/")
    assert engine.index_source(declared).report.added == 7

    for broken, match in ((declared.model_copy(update={"url": "http://127.0.0.1:9/"}), "cannot reach"),
                          (declared.model_copy(update={"options": {"max_pages": 3}}), "max_pages"),
                          (declared.model_copy(update={"url": site.url + "/missing/"}), "404")):
        with pytest.raises(RagError, match=match) as raised:
            engine.index_source(broken)
        assert "nothing was" in str(raised.value)
    site.server.fail = 503  # type: ignore[attr-defined]
    with pytest.raises(RagError, match="503"):
        engine.index_source(declared)
    site.server.fail = 0  # type: ignore[attr-defined]
    site.write({"robots.txt": "User-agent: rag\nDisallow: /\n"})
    site.requests.clear()
    with pytest.raises(RagError, match="robots.txt disallows"):
        engine.index_source(declared)
    assert site.requests == [("GET", "/robots.txt")]  # disallowed: nothing else asked for
    assert engine.documents(limit=100).total == 7


def _small_site(site: Site) -> None:
    """A sitemap listing two pages; one links to a page the sitemap leaves out and to a PDF, the
    other says noindex."""
    site.write({
        "sitemap.xml": ('<?xml version="1.0" encoding="UTF-8"?>'
                        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                        f"<url><loc>{site.url}/a</loc></url><url><loc>{site.url}/b.html</loc></url>"
                        "<url><loc>https://elsewhere.invalid/x</loc></url></urlset>"),
        "a.html": _page("A", "Page A.", {"/c": "C", "/files/report.pdf": "Report", "/files/report.pdf#p2": "p. 2"}),
        "b.html": _page("B", "Page B.", {"/d.html": "D"}, head='<meta name="robots" content="noindex">'),
        "c.html": _page("C", "Page C, in no sitemap."),
        "d.html": _page("D", "Page D."),
    })
    (site.folder / "files").mkdir()
    make_pdf(site.folder / "files" / "report.pdf", ["A report."])


def test_a_sitemap_lists_the_pages_and_what_they_link_to_is_added(site):
    _small_site(site)
    site.server.plain = True  # type: ignore[attr-defined]  # no Last-Modified: versions are the bodies' hashes
    source = WebSource(SourceSettings(name="s", url=site.url + "/"))
    try:
        items = {i.id: i for i in source.items()}
        assert set(items) == {"a.html", "files/report.pdf"}  # b.html says noindex, c and d are in no sitemap
        assert all(i.version.startswith("sha256:") for i in items.values())
        assert source.fetch(items["files/report.pdf"]).startswith(b"%PDF")
        assert b"Page A." in source.fetch(items["a.html"])
    finally:
        source.close()
    asked = {p for _, p in site.requests}
    assert "/" not in asked and "/c" not in asked and "/d.html" not in asked

    source = WebSource(SourceSettings(name="s", url=site.url + "/", options={"sitemap": "/gone.xml"}))
    with pytest.raises(SourceError, match="gone.xml"):
        list(source.items())
    source.close()


def test_depth_and_credentials(site, monkeypatch):
    _intranet(site)
    source = WebSource(SourceSettings(name="s", url=site.url + "/", options={"max_depth": 1}))
    try:
        assert {i.id for i in source.items()} == {"index.html", "docs/index.html", "files/handbook.pdf"}
    finally:
        source.close()
    assert not [p for _, p in site.requests if p.startswith("/docs/") and p != "/docs/"]

    site.server.auth = "alice:s3cret"  # type: ignore[attr-defined]
    monkeypatch.setenv("WEB_USER", "alice")
    for password, works in (("s3cret", True), ("wrong", False)):
        monkeypatch.setenv("WEB_PASS", password)
        source = WebSource(SourceSettings(name="s", url=site.url + "/docs/", options={"max_depth": 0},
                                          credentials={"username": "WEB_USER", "password": "WEB_PASS"}))
        try:
            if works:
                assert [i.id for i in source.items()] == ["docs/index.html"]
            else:
                with pytest.raises(SourceError, match="credentials"):
                    list(source.items())
        finally:
            source.close()
    with pytest.raises(RagError, match="max_depht"):
        WebSource(SourceSettings(name="s", url=site.url + "/", options={"max_depht": 1}))
