import json
import os
from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import IngestError, SkipDocument
from rag.ingest import SourceFile, discover, load_source
from rag.records import Document

from conftest import make_docx, make_pdf


@pytest.fixture
def ingest_settings():
    return Settings.load(environ={}).ingest


def load_one(path: Path, settings, rel: str | None = None):
    items = list(load_source(SourceFile(path, rel or path.name), settings))
    assert len(items) == 1, items
    return items[0]


def test_every_format_loads_with_stable_id_and_metadata(sample_docs, ingest_settings):
    found = discover([sample_docs], ingest_settings)
    assert not found.missing and not found.skipped
    docs = {}
    for src in found.files:
        for item in load_source(src, ingest_settings):
            assert isinstance(item, Document), (src.rel, item)
            docs[item.doc_id] = item
    assert set(docs) == {"handbook.md", "notes.txt", "intranet.html", "manual.pdf", "policy.docx",
                         "prices.csv", "faq-1", "faq-2", "person-ana"}
    for doc in docs.values():
        meta = doc.metadata
        assert len(meta["sha256"]) == 64 and meta["title"] and meta["source"] and meta["mtime"] > 0
    assert docs["manual.pdf"].metadata["title"] == "Robot Manual"
    assert docs["handbook.md"].metadata["title"] == "Handbook"
    assert docs["intranet.html"].metadata["title"] == "IT Intranet"
    assert docs["faq-2"].metadata["fields"] == {"category": "office"}
    assert docs["faq-2"].metadata["title"] == "Badge"


def test_pdf_sections_carry_their_page(sample_docs, ingest_settings):
    doc = load_one(sample_docs / "manual.pdf", ingest_settings)
    assert [s.page for s in doc.sections] == [1, 2]
    assert "E-451" in doc.sections[1].text


def test_markdown_heading_paths_and_code_fences(sample_docs, ingest_settings):
    doc = load_one(sample_docs / "handbook.md", ingest_settings)
    by_heading = {s.headings: s.text for s in doc.sections}
    assert "27 days" in by_heading[("Handbook", "Leave")]
    assert "16 weeks" in by_heading[("Handbook", "Leave", "Parental leave")]
    assert "# this is code" in by_heading[("Handbook", "Leave", "Parental leave")]


def test_html_keeps_content_and_drops_scripts_styles_and_navigation(sample_docs, ingest_settings):
    doc = load_one(sample_docs / "intranet.html", ingest_settings)
    text = doc.text
    for marker in ("SCRIPTMARKER", "NAVMARKER", "HEADERMARKER", "FOOTERMARKER", "color:red"):
        assert marker not in text
    by_heading = {s.headings: s.text for s in doc.sections}
    assert by_heading[("IT Services",)] == "The VPN gateway is vpn.acme.example on port 443."
    assert "PRN-7" in by_heading[("IT Services", "Printers")]


def test_docx_headings_and_tables(sample_docs, ingest_settings):
    doc = load_one(sample_docs / "policy.docx", ingest_settings)
    by_heading = {s.headings: s.text for s in doc.sections}
    assert "two quotes" in by_heading[("Procurement Policy",)]
    approvals = by_heading[("Procurement Policy", "Approvals")]
    assert "CFO" in approvals and "Director | 50,000" in approvals


def test_csv_keeps_header_apart_from_rows(sample_docs, ingest_settings):
    doc = load_one(sample_docs / "prices.csv", ingest_settings)
    (section,) = doc.sections
    assert section.table_header == "part | description | price"
    assert len(section.table_rows) == 60 and section.table_rows[0] == "P-001 | Spare part number 1 | 3.50"


def test_json_fields_are_configurable(tmp_path):
    path = tmp_path / "kb.jsonl"
    path.write_text(json.dumps({"_id": "x1", "body": "Body text here.", "heading": "H"}) + "\n")
    settings = Settings.load(environ={"RAG_INGEST_JSON_ID_FIELD": "_id", "RAG_INGEST_JSON_TEXT_FIELD": "body",
                                      "RAG_INGEST_JSON_TITLE_FIELD": "heading"}).ingest
    doc = load_one(path, settings)
    assert doc.doc_id == "x1" and doc.metadata["title"] == "H" and "Body text here." in doc.text


def test_jsonl_bad_lines_fail_alone_and_name_file_and_line(tmp_path, ingest_settings):
    path = tmp_path / "kb.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n{not json}\n{"id": "c", "body": "no text"}\n{"text": "no id"}\n')
    items = list(load_source(SourceFile(path, "kb.jsonl"), ingest_settings))
    assert isinstance(items[0], Document) and items[0].doc_id == "a"
    assert isinstance(items[1], IngestError) and "kb.jsonl line 2: not valid JSON" in str(items[1])
    assert isinstance(items[2], IngestError) and "line 3: no 'text' field" in str(items[2])
    assert "RAG_INGEST_JSON_TEXT_FIELD" in str(items[2])
    assert isinstance(items[3], Document) and items[3].doc_id == "kb.jsonl#4"


@pytest.mark.parametrize("encoding", ["cp1252", "utf-16", "gb18030"])
def test_text_in_other_encodings_is_decoded(tmp_path, ingest_settings, encoding):
    text = "Café prices: crème brûlée costs 4 euros." if encoding != "gb18030" else "食堂早餐时间为七点半到九点。" * 3
    path = tmp_path / "f.txt"
    path.write_bytes(text.encode(encoding))
    assert load_one(path, ingest_settings).text == text


def _encrypted_pdf(tmp_path: Path) -> Path:
    from pypdf import PdfReader, PdfWriter

    plain = make_pdf(tmp_path / "plain.pdf", ["Secret salary bands."])
    writer = PdfWriter()
    for page in PdfReader(plain).pages:
        writer.add_page(page)
    writer.encrypt(user_password="hunter2", algorithm="AES-128")
    out = tmp_path / "locked.pdf"
    with out.open("wb") as fh:
        writer.write(fh)
    return out


def test_bad_inputs_get_one_clear_reason(tmp_path, ingest_settings):
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "blank.txt").write_text("   \n\n  ")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 8)
    good = make_pdf(tmp_path / "good.pdf", ["Page one text. " * 40, "Page two text. " * 40])
    (tmp_path / "truncated.pdf").write_bytes(good.read_bytes()[:300])
    (tmp_path / "fake.pdf").write_bytes(b"this is not a pdf at all")
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "legacy.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "bundle.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    os.symlink(tmp_path / "does-not-exist.txt", tmp_path / "dangling.txt")
    _encrypted_pdf(tmp_path)
    expect = {
        "empty.md": (SkipDocument, "empty file"),
        "blank.txt": (SkipDocument, "empty file"),
        "binary.txt": (IngestError, "binary content"),
        "truncated.pdf": (IngestError, "corrupt or unreadable PDF"),
        "fake.pdf": (IngestError, "not a PDF file"),
        "broken.docx": (IngestError, "corrupt or unreadable .docx"),
        "legacy.docx": (IngestError, "password-protected .docx or legacy .doc"),
        "image.png": (IngestError, "not an image Pillow can identify"),
        "bundle.zip": (SkipDocument, "unsupported file type '.zip'"),
        "dangling.txt": (IngestError, "cannot read"),
        "locked.pdf": (IngestError, "encrypted PDF (password required)"),
    }
    for name, (kind, words) in expect.items():
        item = load_one(tmp_path / name, ingest_settings)
        assert isinstance(item, kind), (name, item)
        assert words in str(item), (name, str(item))


def test_a_pdf_with_neither_text_nor_images_is_skipped_with_why(tmp_path, ingest_settings):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)  # a drawing and no text: nothing for OCR either (scans: tests/test_formats.py)
    pdf.output(str(tmp_path / "drawing.pdf"))
    item = load_one(tmp_path / "drawing.pdf", ingest_settings)
    assert isinstance(item, SkipDocument) and "no text layer, and no images for OCR" in str(item)


def test_discover_honours_hidden_files_ignore_file_and_exclude(tmp_path):
    root = tmp_path / "kb"
    (root / "drafts").mkdir(parents=True)
    (root / ".git").mkdir()
    for rel in ("a.md", "b.txt", "drafts/c.md", ".git/config", ".hidden.md", "qa.jsonl", "notes.tmp"):
        (root / rel).write_text("x")
    (root / ".ragignore").write_text("# comment\nqa.jsonl\ndrafts/\n")
    settings = Settings.load(environ={"RAG_INGEST_EXCLUDE": '["*.tmp"]'}).ingest
    found = discover([root, tmp_path / "nope"], settings)
    assert [f.rel for f in found.files] == ["a.md", "b.txt"]
    assert found.missing == [(str(tmp_path / "nope"), "no such file or folder")]


def test_files_named_directly_use_their_name_as_id(sample_docs, ingest_settings):
    found = discover([sample_docs / "notes.txt"], ingest_settings)
    assert found.files == [SourceFile(sample_docs / "notes.txt", "notes.txt")]


def test_docx_fixture_helper_roundtrip(tmp_path, ingest_settings):
    path = make_docx(tmp_path / "t.docx", [("p", "Only a paragraph, no heading.")])
    doc = load_one(path, ingest_settings)
    assert doc.sections[0].headings == () and doc.metadata["title"] == "t"


def test_pdf_with_arrays_beyond_pypdf_default_limit_still_loads(tmp_path, ingest_settings):
    """Real SEC filings hold arrays of over 100,000 elements, which pypdf refuses by default."""
    import io

    from pypdf import PdfReader, PdfWriter
    from pypdf.errors import LimitReachedError
    from pypdf.generic import ArrayObject, NameObject, NumberObject

    plain = make_pdf(tmp_path / "plain.pdf", ["Quarterly revenue grew 12 percent."])
    writer = PdfWriter(clone_from=plain)
    writer._root_object[NameObject("/BigArray")] = ArrayObject([NumberObject(i) for i in range(150_000)])
    path = tmp_path / "big-array.pdf"
    with path.open("wb") as fh:
        writer.write(fh)
    with pytest.raises(LimitReachedError):
        PdfReader(io.BytesIO(path.read_bytes())).pages[0].extract_text()
    doc = load_one(path, ingest_settings)
    assert doc.sections[0].text == "Quarterly revenue grew 12 percent."
