"""Shared fixtures: real files of every supported format, the real bundled model, real FAISS."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from rag import Engine, Settings
from rag.embed import Embedder

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO / "corpora"


def make_pdf(path: Path, pages: list[str], title: str | None = None) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    for text in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))
    return path


def make_docx(path: Path, blocks: list[tuple[str, Any]]) -> Path:
    """blocks: ("h1"|"h2"|"p", text) or ("table", [[cell, ...], ...])."""
    import docx

    document = docx.Document()
    for kind, value in blocks:
        if kind == "table":
            table = document.add_table(rows=len(value), cols=len(value[0]))
            for r, row in enumerate(value):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = cell
        elif kind.startswith("h"):
            document.add_heading(value, level=int(kind[1:]))
        else:
            document.add_paragraph(value)
    document.save(str(path))
    return path


def write_sample_docs(root: Path) -> Path:
    """A small knowledge base with one file of every supported format."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "handbook.md").write_text(
        "# Handbook\n\nWelcome to Acme.\n\n## Leave\n\nEvery employee gets 27 days of paid vacation a year.\n\n"
        "### Parental leave\n\nParents receive 16 weeks of paid parental leave.\n\n"
        "```\n# this is code, not a heading\n```\n",
        encoding="utf-8",
    )
    (root / "notes.txt").write_text("The cafeteria opens at 07:45 and closes at 15:30 on weekdays.\n", encoding="utf-8")
    (root / "intranet.html").write_text(
        "<html><head><title>IT Intranet</title><style>.nav{color:red}</style>"
        "<script>var secret='SCRIPTMARKER';</script></head><body>"
        "<nav><a href='/'>Home</a> NAVMARKER</nav><header>HEADERMARKER</header>"
        "<h1>IT Services</h1><p>The VPN gateway is <b>vpn.acme.example</b> on port 443.</p>"
        "<h2>Printers</h2><p>Printer queue PRN-7 is on floor 3.</p>"
        "<footer>FOOTERMARKER</footer></body></html>",
        encoding="utf-8",
    )
    make_pdf(root / "manual.pdf", [
        "Robot manual. Chapter 1: unpacking the robot and charging the battery overnight.",
        "Chapter 2: error code E-451 means the lidar sensor is blocked; clean the lens with a dry cloth.",
    ], title="Robot Manual")
    make_docx(root / "policy.docx", [
        ("h1", "Procurement Policy"),
        ("p", "Purchases above 5,000 euros need two quotes."),
        ("h2", "Approvals"),
        ("p", "The CFO approves purchases above 50,000 euros."),
        ("table", [["Tier", "Limit"], ["Manager", "5,000"], ["Director", "50,000"]]),
    ])
    (root / "prices.csv").write_text(
        "part,description,price\n" + "".join(f"P-{i:03d},Spare part number {i},{i * 3}.50\n" for i in range(1, 61)),
        encoding="utf-8",
    )
    (root / "faq.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [
            {"id": "faq-1", "title": "Password reset", "text": "Reset your password at id.acme.example.", "category": "it"},
            {"id": "faq-2", "title": "Badge", "text": "Lost badges are replaced at reception for 10 euros.", "category": "office"},
        ]) + "\n",
        encoding="utf-8",
    )
    (root / "people.json").write_text(
        json.dumps([{"id": "person-ana", "text": "Ana Silva leads the Lisbon robotics lab."}]), encoding="utf-8"
    )
    return root


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real bundled MiniLM, loaded once for the whole session."""
    e = Embedder(Settings.load().embedding)
    e.warm_up()
    return e


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        values = {"index.path": str(tmp_path / "index")}
        values.update(overrides)
        return Settings.load(overrides=values, environ={})

    return factory


@pytest.fixture
def make_engine(make_settings: Callable[..., Settings], embedder: Embedder) -> Callable[..., Engine]:
    engines: list[Engine] = []

    def factory(**overrides: Any) -> Engine:
        engine = Engine(make_settings(**overrides), embedder=embedder)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.close()


@pytest.fixture
def sample_docs(tmp_path: Path) -> Path:
    return write_sample_docs(tmp_path / "docs")


@pytest.fixture
def indexed(make_engine, sample_docs) -> Callable[..., Engine]:
    """An Engine over the sample documents, indexed, with these settings overridden."""
    def build(**overrides: Any) -> Engine:
        engine = make_engine(**overrides)
        engine.index([sample_docs])
        return engine

    return build


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for `rag` subprocesses: an index in tmp, nothing from the caller's RAG_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["RAG_INDEX_PATH"] = str(tmp_path / "cli-index")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# chunks.sqlite as rag 0.1.0 (commit 82009e4, index format 1) created it: one id space, no
# collections, no origins. Kept here as text so that no index file is committed.
FORMAT1_SCHEMA = """
CREATE TABLE documents (
    doc_id     TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    title      TEXT,
    mtime      REAL,
    sha256     TEXT NOT NULL,
    format     TEXT,
    metadata   TEXT NOT NULL,
    indexed_at TEXT NOT NULL,
    -- Set when the same content was already indexed under another id: the chunks are stored
    -- once, under that document, and found under both.
    content_of TEXT
);
CREATE TABLE chunks (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id   TEXT NOT NULL REFERENCES documents(doc_id),
    ordinal  INTEGER NOT NULL,
    text     TEXT NOT NULL,
    metadata TEXT NOT NULL,
    tokens   TEXT  -- BM25 tokens, space-separated: the BM25 index is rebuilt from them at each commit
);
CREATE INDEX chunks_by_doc ON chunks(doc_id, ordinal);
CREATE INDEX documents_by_sha ON documents(sha256);
CREATE TABLE masked (id INTEGER PRIMARY KEY);
"""


def write_format1_index(engine: Engine, folder: Path) -> Path:
    """Index `folder` and rewrite the version as format 1, as the previous release wrote it: one
    folder holding its chunks.sqlite (that release's schema and rows), vectors.faiss and BM25
    files, and a manifest saying format 1 with their checksums. No segments."""
    import shutil
    import sqlite3

    import numpy as np

    from rag.index.schema import CHUNKS_FILE
    from rag.index.segments import SEGMENTS_DIR
    from rag.index.segments import file_digest
    from rag.index.tokens import make_tokenizer
    from rag.index.vectors import VECTORS_FILE
    from rag.lexical import BM25Index, deserialize_tokens
    from rag.lexical.bm25 import FILES as BM25_FILES

    engine.index([folder])
    version = engine.store.path / engine.store.current_version()
    engine.close()
    manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    (segment,) = manifest.pop("segments")
    segment_dir = engine.store.path / SEGMENTS_DIR / segment["name"]
    new, old = segment_dir / CHUNKS_FILE, version / CHUNKS_FILE
    with sqlite3.connect(old) as target, sqlite3.connect(new) as source:
        target.executescript(FORMAT1_SCHEMA)
        target.executemany("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", source.execute(
            "SELECT doc_id, source, title, mtime, sha256, format, metadata, indexed_at, content_of FROM documents"))
        target.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", source.execute(
            "SELECT id, doc_id, ordinal, text, metadata, tokens FROM chunks"))
        target.executemany("INSERT INTO masked VALUES (?)", source.execute("SELECT id FROM masked"))
        rows = source.execute("SELECT id, tokens FROM chunks ORDER BY id").fetchall()
    shutil.copy(segment_dir / VECTORS_FILE, version / VECTORS_FILE)
    lexical = BM25Index(make_tokenizer(engine.settings.index), **manifest["index"]["bm25"])
    lexical.build(np.array([i for i, _ in rows], dtype=np.int64), (deserialize_tokens(t) for _, t in rows))
    lexical.save(version)
    shutil.rmtree(engine.store.path / SEGMENTS_DIR)
    for key in ("template", "next_chunk_id", "next_segment"):
        manifest.pop(key, None)
    manifest["format_version"] = 1
    manifest["files"] = {f: file_digest(version / f) for f in (CHUNKS_FILE, VECTORS_FILE, *BM25_FILES)}
    (version / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return engine.store.path


@pytest.fixture(scope="session")
def served(tmp_path_factory, embedder):
    """One `rag serve` for the service's tests, over collections hr and finance, with keys:
    admin, reader (read, everything), hr (read, collection=hr), writer (write, everything).
    Tests that write use collections of their own, so they leave hr and finance as they are."""
    from serving import build_knowledge, running_server

    root = tmp_path_factory.mktemp("served")
    index = build_knowledge(root, embedder)
    from rag.serve.keys import KeyStore

    store = KeyStore(index / "keys.sqlite")
    tokens = {name: store.add(name, scope, filters)[1] for name, scope, filters in (
        ("admin", "admin", []), ("reader", "read", []), ("hr", "read", ["collection=hr"]), ("writer", "write", []))}
    with running_server(index, root / "server.log") as server:
        server.tokens.update(tokens)
        yield server
