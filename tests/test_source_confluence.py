"""Confluence sources (issue 34): rag.sources.confluence read through `Engine.index_source`.

No Confluence can run on these machines: tests/confluence_server.py is a stub of Confluence's
documented REST API (v1), serving on 127.0.0.1 exactly the calls the source makes, in the response
shapes of Atlassian's REST API docs for Data Center (/rest/api, personal access token) and Cloud
(/wiki/rest/api, e-mail and API token, users by accountId). Its listings come in pages of at most
three results, so every space is paged. Two spaces are indexed with their hierarchy as the heading
path, a restricted page (and its child and attachment) gets its access list, a PDF attachment goes
through the PDF loader; the next run reads exactly what changed, an unchanged run fetches nothing,
and a listing cut short or refused credentials delete nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from confluence_server import Attachment, ConfluenceStub, Page
from conftest import make_pdf
from rag import Engine, RagError, Settings
from rag.errors import ConfigError
from rag.filters import Access
from rag.sources.confluence import ConfluenceSource
from rag.sources.settings import SourceSettings

TOKEN = "pat-3f9c2a7d1e5b4c60"
RESTRICTED = {"HR/HR Home/Salaries.html", "HR/HR Home/Salaries/Salary bands.html",
              "HR/HR Home/Salaries/salary-table.csv"}
IDS = RESTRICTED | {
    "HR/HR Home.html", "HR/HR Home/Policies.html", "HR/HR Home/Policies/Leave policy.html",
    "HR/HR Home/Policies/Travel policy.html", "HR/HR Home/Benefits.html", "HR/HR Home/Benefits/benefits-guide.pdf",
    "ENG/Engineering.html", "ENG/Engineering/Deploys.html", "ENG/Engineering/On-call.html",
    "ENG/Engineering/Q1-Q2 roadmap.html"}


def _pdf(tmp_path: Path, text: str) -> bytes:
    return make_pdf(tmp_path / "guide.pdf", [text], title="Benefits guide").read_bytes()


@pytest.fixture
def wiki(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConfluenceStub]:
    """A Data Center site with two spaces, its personal access token in WIKI_PAT."""
    monkeypatch.setenv("WIKI_PAT", TOKEN)
    stub = ConfluenceStub(auth=f"Bearer {TOKEN}")
    stub.spaces = {"HR": "Human Resources", "ENG": "Engineering"}
    for page in (
        Page("100", "HR", "HR Home", "<p>Welcome to Human Resources.</p>"),
        Page("101", "HR", "Policies", "<p>All HR policies live below this page.</p>", "100"),
        Page("102", "HR", "Leave policy", "<h1>Annual leave</h1><p>Staff get 27 days of annual leave a year, "
             "code LV-11.</p><h2>Carry over</h2><p>Up to five unused days carry over to the next year.</p>", "101"),
        Page("103", "HR", "Travel policy", "<p>Book trains for trips under 500 km, code TR-22.</p>", "101"),
        Page("104", "HR", "Salaries", "<p>Salary reviews happen every March, code SA-33.</p>", "100",
             users=["bob"], groups=["hr"],
             attachments=[Attachment("att1", "salary-table.csv", b"band,minimum\nB1,40000\nB2,52000\n", "text/csv")]),
        Page("105", "HR", "Salary bands", "<p>Band B3 starts at 61000 euros a year, code SB-44.</p>", "104"),
        Page("106", "HR", "Benefits", "<p>See the benefits guide attached.</p>", "100", attachments=[
            Attachment("att2", "benefits-guide.pdf",
                       _pdf(tmp_path, "The gym subsidy is 30 euros a month, code GY-55.")),
            Attachment("att3", "installer.exe", b"MZ not a document", "application/octet-stream")]),
        Page("200", "ENG", "Engineering", "<p>The engineering space.</p>"),
        Page("201", "ENG", "Deploys", "<p>Deploys happen on Tuesdays, code DP-66.</p>", "200"),
        Page("202", "ENG", "On-call", "<p>The on-call rota changes on Mondays, code OC-77.</p>", "200"),
        Page("203", "ENG", "Q1/Q2 roadmap", "<p>Ship the second search release, code RM-88.</p>", "200"),
    ):
        stub.add(page)
    stub.start()
    yield stub
    stub.stop()


def _declared(stub: ConfluenceStub, **options) -> SourceSettings:
    return SourceSettings(name="wiki", url=f"confluence+{stub.url}", options={"spaces": ["HR", "ENG"], **options},
                          credentials={"token": "WIKI_PAT"})


def _engine(tmp_path: Path, embedder) -> Engine:
    return Engine(Settings.load(overrides={"index.path": str(tmp_path / "index")}, environ={}), embedder=embedder)


def _ids(engine: Engine, access: Access | None = None) -> set[str]:
    return {d.doc_id for d in engine.documents(limit=100, access=access).documents}


def test_two_spaces_are_indexed_with_hierarchy_restrictions_and_attachments(wiki, tmp_path, embedder):
    engine = _engine(tmp_path, embedder)
    run = engine.index_source(_declared(wiki))
    assert (run.listed, run.fetched, run.report.added, run.report.failed) == (13, 13, 13, 0)
    assert _ids(engine) == IDS
    assert wiki.count("spaceKey=HR") == 3 and wiki.count("spaceKey=ENG") == 2  # paged: 7 and 4 pages, 3 a request
    assert wiki.count("/child/attachment") == wiki.count("/restriction/") == 0  # expanded in the listing

    (hit,) = engine.search("How many days of annual leave do staff get?", k=1)
    assert hit.doc_id == "HR/HR Home/Policies/Leave policy.html" and "27 days" in hit.text
    assert hit.location == "Human Resources > HR Home > Policies > Leave policy > Annual leave"
    assert hit.metadata["title"] == "Leave policy" and hit.metadata["collection"] == "wiki"
    (hit,) = engine.search("How much is the gym subsidy?", k=1)
    assert hit.doc_id == "HR/HR Home/Benefits/benefits-guide.pdf" and "GY-55" in hit.text

    (detail,) = engine.document("HR/HR Home/Salaries/Salary bands.html", "wiki")
    assert detail.metadata["acl"] == {"users": ["bob"], "groups": ["hr"]}  # inherited from Salaries
    assert "acl" not in engine.document("HR/HR Home/Benefits.html", "wiki")[0].metadata  # the collection's default
    assert _ids(engine, Access("ana", ("hr",))) == IDS
    assert _ids(engine, Access("ana", ("eng",))) == IDS - RESTRICTED
    assert _ids(engine, Access("bob")) == IDS
    question = "When do salary reviews happen?"
    assert engine.search(question, k=1, access=Access("ana", ("hr",)))[0].doc_id == "HR/HR Home/Salaries.html"
    assert all(h.doc_id not in RESTRICTED for h in engine.search(question, k=5, access=Access("ana", ("eng",))))


def test_the_next_run_reads_exactly_what_changed(wiki, tmp_path, embedder):
    engine = _engine(tmp_path, embedder)
    engine.index_source(_declared(wiki))
    wiki.requests.clear()
    again = engine.index_source(_declared(wiki))  # nothing changed: listed, nothing fetched
    assert (again.fetched, again.report.added, again.report.updated, again.report.unchanged) == (0, 0, 0, 13)
    assert wiki.count("expand=body") == wiki.count("/download/") == 0
    assert len(wiki.requests) == 2 + 3 + 2  # the two spaces and their listings' pages

    wiki.edit("102", "<h1>Annual leave</h1><p>Staff now get 30 days of annual leave a year, code LV-12.</p>")
    wiki.edit("201", "<p>Deploys now happen on Wednesdays, code DP-67.</p>")
    wiki.edit("202", "<p>The on-call rota now changes on Fridays, code OC-78.</p>")
    del wiki.pages["103"]
    wiki.add(Page("107", "HR", "Remote work", "<p>Staff may work remotely two days a week, code RW-99.</p>", "101"))
    wiki.requests.clear()
    changed = engine.index_source(_declared(wiki))
    report = changed.report
    assert (changed.fetched, report.added, report.updated, report.deleted, report.unchanged) == (4, 1, 3, 1, 9)
    assert wiki.count("expand=body") == 4 and wiki.count("/download/") == 0
    assert _ids(engine) == IDS - {"HR/HR Home/Policies/Travel policy.html"} | {"HR/HR Home/Policies/Remote work.html"}
    assert "30 days" in engine.search("How many days of annual leave do staff get?", k=1)[0].text

    wiki.pages["104"].users, wiki.pages["104"].groups = [], []  # the restriction lifted: no new page version
    lifted = engine.index_source(_declared(wiki))
    report = lifted.report  # read again; the same text, so only the access lists are rewritten
    assert (lifted.fetched, report.acl_changed, report.updated, report.added, report.deleted) == (3, 3, 0, 0, 0)
    assert _ids(engine, Access("ana", ("eng",))) >= RESTRICTED


def test_a_listing_cut_short_deletes_nothing(wiki, tmp_path, embedder):
    engine = _engine(tmp_path, embedder)
    engine.index_source(_declared(wiki))
    del wiki.pages["202"]
    wiki.failures["start=3"] = [500]  # HR's second listing page
    with pytest.raises(RagError, match=r"answered 500; nothing was deleted"):
        engine.index_source(_declared(wiki))
    assert engine.documents(limit=100).total == 13
    wiki.delay["spaceKey=ENG"] = 2.0
    with pytest.raises(RagError, match=r"did not answer within 0.5 s; nothing was deleted"):
        engine.index_source(_declared(wiki, timeout=0.5))
    assert engine.documents(limit=100).total == 13
    wiki.delay.clear()
    assert engine.index_source(_declared(wiki)).report.deleted == 1  # once it answers, the page goes


def test_refused_credentials_or_a_missing_space_delete_nothing(wiki, tmp_path, embedder, monkeypatch):
    engine = _engine(tmp_path, embedder)
    engine.index_source(_declared(wiki))
    monkeypatch.setenv("WIKI_PAT", "wrong-token-7d1e5b4c60")
    with pytest.raises(RagError, match="401") as refused:
        engine.index_source(_declared(wiki))
    assert "wrong-token" not in str(refused.value) and TOKEN not in str(refused.value)
    monkeypatch.setenv("WIKI_PAT", TOKEN)
    missing = _declared(wiki).model_copy(update={"options": {"spaces": ["HR", "NOPE"]}})
    with pytest.raises(RagError, match="space 'NOPE' does not exist"):
        engine.index_source(missing)
    assert engine.documents(limit=100).total == 13
    with pytest.raises(ConfigError, match="options.spaces"):
        ConfluenceSource(_declared(wiki).model_copy(update={"options": {"spaces": []}}))
    with pytest.raises(ConfigError, match="options.space"):
        ConfluenceSource(_declared(wiki).model_copy(update={"options": {"space": "HR"}}))
    with pytest.raises(ConfigError, match="credentials"):
        ConfluenceSource(_declared(wiki).model_copy(update={"credentials": {"password": "WIKI_PAT"}}))


def test_cloud_with_email_and_api_token_and_a_server_that_expands_nothing(tmp_path, monkeypatch):
    """Cloud's /wiki context, basic auth, users by accountId; restrictions and attachments from their
    own endpoints; links naming another host followed on this one; a 429 waited out."""
    monkeypatch.setenv("WIKI_EMAIL", "ana@example.com")
    monkeypatch.setenv("WIKI_TOKEN", "ATATT3xFfGF0-api-token")
    stub = ConfluenceStub("Basic " + base64.b64encode(b"ana@example.com:ATATT3xFfGF0-api-token").decode(),
                          context="/wiki", flavour="cloud")
    stub.spaces = {"FIN": "Finance"}
    stub.add(Page("300", "FIN", "Budget", "<h1>Quarterly</h1><p>The budget is set each quarter.</p>",
                  users=["557058:ana"], groups=["finance", "board"]))
    stub.add(Page("301", "FIN", "Plans: 2024/25", "<p>Plans.</p>", "300", users=["557058:ana", "557058:joe"],
                  groups=["finance"], attachments=[Attachment("att9", "forecast.pdf", _pdf(tmp_path, "Forecast."))]))
    stub.add(Page("302", "FIN", "Plans: 2024-25", "<p>Other plans.</p>", "300"))
    stub.add(Page("303", "FIN", ".hidden", "<p>Dot.</p>", "300"))
    stub.expand, stub.foreign_links, stub.max_limit = False, True, 2
    stub.failures["/child/attachment"] = [429]
    stub.start()
    try:
        source = ConfluenceSource(SourceSettings(name="fin", url=f"confluence+{stub.url}", options={"spaces": ["FIN"]},
                                                 credentials={"username": "WIKI_EMAIL", "token": "WIKI_TOKEN"}))
        items = {i.id: i for i in source.items()}
        assert set(items) == {"FIN/Budget.html", "FIN/Budget/Plans: 2024-25~301.html",
                              "FIN/Budget/Plans: 2024-25~302.html", "FIN/Budget/Plans: 2024-25/forecast.pdf",
                              "FIN/Budget/_hidden.html"}
        assert items["FIN/Budget.html"].acl == {"users": ["557058:ana"], "groups": ["board", "finance"]}
        attachment = items["FIN/Budget/Plans: 2024-25/forecast.pdf"]
        assert attachment.acl == {"users": ["557058:ana"], "groups": ["finance"]}  # both levels intersected
        assert attachment.version.startswith("attachment:1;read=") and items["FIN/Budget/_hidden.html"].acl is not None
        assert stub.count("/restriction/byOperation/read") == 4 and stub.count("/child/attachment") == 5
        page = source.fetch(items["FIN/Budget.html"]).decode()
        assert "<title>Budget</title>" in page and "<h1>Finance &gt; Budget</h1>" in page
        assert "<h2>Quarterly</h2>" in page  # the page's own headings one level down
        assert source.fetch(attachment).startswith(b"%PDF")
        assert all(r.startswith("/wiki/") for r in stub.requests) and stub.count("start=2") == 1
        source.close()
    finally:
        stub.stop()
