"""Slides, spreadsheets, e-mail with attachments, images and scanned PDFs (issue 32): their
structure and locations, and every bad input of the new types costing one line that names it."""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import zlib
from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import IngestError, RagError, SkipDocument
from rag.ingest import SourceFile, load_source
from rag.ingest import ocr as ocr_module
from rag.ingest.ocr import text_of
from rag.records import Document, location_of

from conftest import make_pdf
from hostile_files import _inflating, _Part, _write_zip
from office_files import (make_eml, make_msg, make_ods, make_pptx, make_scanned_pdf, make_xls, make_xlsx,
                          text_image)


def settings(**overrides):
    return Settings.load(overrides={f"ingest.{k}": v for k, v in overrides.items()}, environ={}).ingest


def load(path: Path, **overrides) -> list[Document | RagError]:
    return list(load_source(SourceFile(path, path.name), settings(**overrides)))


def documents(path: Path, **overrides) -> dict[str, Document]:
    items = load(path, **overrides)
    assert all(isinstance(i, Document) for i in items), items
    return {d.doc_id: d for d in items}


def only_error(path: Path, **overrides) -> RagError:
    (item,) = load(path, **overrides)
    assert isinstance(item, RagError), item
    return item


# -- slides ---------------------------------------------------------------------------------------

def test_a_deck_gives_a_section_per_slide_with_title_body_table_and_notes(tmp_path, embedder):
    deck = make_pptx(tmp_path / "review.pptx", [
        {"title": "Q3 results", "body": ["Revenue grew 12%", "Churn fell to 3%"], "notes": "Mention the MR-900 launch"},
        {"title": "Price list", "table": [["Item", "Price"]] + [[f"Widget {i}", f"{10 + i} EUR"] for i in range(30)]},
    ], title="Quarterly review")
    (doc,) = documents(deck).values()
    assert doc.metadata["title"] == "Quarterly review" and doc.metadata["format"] == "pptx"
    first, table = doc.sections
    assert first.headings == ("Q3 results",) and first.metadata == {"slide": 1}
    assert "Revenue grew 12%\nChurn fell to 3%" in first.text and "Notes: Mention the MR-900 launch" in first.text
    assert table.table_header == "Item | Price" and len(table.table_rows) == 30 and table.metadata == {"slide": 2}

    from rag.config import Settings as S
    from rag.indexing.run import make_chunker
    chunks = make_chunker(S.load(overrides={"ingest.csv_rows_per_chunk": 8}, environ={}), embedder).chunk(doc)
    table_chunks = [c for c in chunks if c.metadata.get("slide") == 2]
    assert len(table_chunks) >= 4 and all(c.text.startswith("Item | Price") for c in table_chunks)
    assert location_of(chunks[0].metadata) == "slide 1 (Q3 results)"
    assert location_of(table_chunks[-1].metadata) == "slide 2 (Price list)"


def test_a_corrupt_or_protected_deck_is_one_line(tmp_path):
    deck = make_pptx(tmp_path / "deck.pptx", [{"title": "T", "body": ["x"]}])
    cut = tmp_path / "cut.pptx"
    cut.write_bytes(deck.read_bytes()[:2000])
    assert "corrupt or unreadable .pptx" in str(only_error(cut))
    protected = tmp_path / "locked.pptx"
    protected.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)
    assert "password-protected" in str(only_error(protected))


# -- spreadsheets ---------------------------------------------------------------------------------

def test_a_sheet_keeps_its_row_numbers_types_and_merged_header(tmp_path, embedder):
    book = make_xlsx(tmp_path / "prices.xlsx", {
        "Prices": [[None, "Q1", None, None], ["Item", "Jan", "Feb", None], ["Widget", 12, 12.5, None],
                   [None, None, None, None], ["Gadget", 30, dt.date(2024, 3, 1), None], ["Flag", True, None, None]],
        "Empty": [],
    }, merges={"Prices": ["B1:C1=Q1"]})
    (doc,) = documents(book).values()
    (sheet,) = doc.sections  # the empty sheet gives nothing
    assert sheet.metadata == {"sheet": "Prices"} and sheet.headings == ("Prices",)
    assert sheet.table_header == "Item | Q1 Jan | Q1 Feb"  # the merged "Q1" given to both columns
    assert sheet.table_rows == ("Widget | 12 | 12.5", "Gadget | 30 | 2024-03-01", "Flag | TRUE | ")
    assert sheet.row_numbers == (3, 5, 6)  # the sheet's rows, the empty row 4 dropped

    from rag.indexing.run import make_chunker
    (chunk,) = make_chunker(Settings.load(environ={}), embedder).chunk(doc)
    assert location_of(chunk.metadata) == "sheet Prices, rows 3-6"


@pytest.mark.parametrize("make, name", [(make_xls, "rooms.xls"), (make_ods, "rooms.ods")])
def test_legacy_excel_and_opendocument_sheets_read_alike(tmp_path, make, name):
    path = make(tmp_path / name, "Rooms", [["Room", "Seats"], ["Tagus", 12], [None, None], ["Douro", 8]])
    (doc,) = documents(path).values()
    (sheet,) = doc.sections
    assert (sheet.table_header, sheet.table_rows, sheet.metadata["sheet"]) == ("Room | Seats", ("Tagus | 12", "Douro | 8"), "Rooms")


def test_a_huge_sheet_is_read_in_bounded_memory(tmp_path):
    import subprocess
    import sys

    rows = [["Id", "Name", "Amount"]] + [[i, f"customer {i}", i * 1.5] for i in range(100_000)]
    book = make_xlsx(tmp_path / "huge.xlsx", {"Ledger": rows})
    # The child's peak memory starts at this process's (Linux keeps it across exec): reset it first.
    code = ("import sys; from pathlib import Path; from rag.config import Settings; "
            "from rag.ingest import SourceFile, load_source; s = Settings.load(environ={}).ingest; "
            "peak = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]); "
            "open('/proc/self/clear_refs', 'w').write('5'); before = peak(); "
            "(d,) = load_source(SourceFile(Path(sys.argv[1]), 'huge.xlsx'), s); "
            "print(len(d.sections[0].table_rows), d.sections[0].row_numbers[-1], (peak() - before) // 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(book)], capture_output=True, text=True, check=True).stdout
    count, last, grown_mb = map(int, out.split())
    assert (count, last) == (100_000, 100_001)
    assert grown_mb < 200, f"reading a 100,000-row sheet grew the process by {grown_mb} MB"


def test_an_encrypted_workbook_is_refused_with_what_to_do(tmp_path):
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = make_xlsx(tmp_path / "plain.xlsx", {"S": [["a", "b"], [1, 2]]})
    locked = tmp_path / "locked.xlsx"
    with open(plain, "rb") as source, open(locked, "wb") as out:
        OOXMLFile(source).encrypt("secret", out)
    error = only_error(locked)
    assert isinstance(error, IngestError) and "password-protected .xlsx" in str(error) and "without a password" in str(error)


def test_a_zip_bomb_dressed_as_a_workbook_is_refused_before_it_unpacks(tmp_path):
    data, _, size, crc = _inflating(b"<worksheet>", b" " * (1 << 20), 1024, b"</worksheet>")
    bomb = _write_zip(tmp_path / "bomb.xlsx", [_Part("xl/worksheets/sheet1.xml", data, size, crc)])
    error = only_error(bomb)
    assert "zip bomb" in str(error) or "max_unpacked_mb" in str(error)


def test_a_file_that_is_not_a_workbook_names_itself(tmp_path):
    fake = tmp_path / "report.xlsx"
    fake.write_text("just text, saved with the wrong name")
    assert "corrupt or unreadable .xlsx" in str(only_error(fake))


# -- e-mail ---------------------------------------------------------------------------------------

def test_an_email_and_its_attachments_are_documents_of_their_own(tmp_path):
    import email
    import email.policy

    terms = make_pdf(tmp_path / "terms.pdf", ["The lease of the Lisbon office runs for five years."])
    annex = make_pdf(tmp_path / "annex.pdf", ["Annex: the garage on level -2 is included."])
    forwarded = make_eml(tmp_path / "fwd.eml", "Parking", "Three parking spaces come with the lease.")
    storage = make_eml(tmp_path / "storage.eml", "Storage", "The archive room in the basement comes with it.")
    mail = make_eml(tmp_path / "offer.eml", "Lease offer", "Hi team, the signed terms are attached.", [
        ("terms.pdf", terms.read_bytes(), "application/pdf"),
        ("terms.pdf", annex.read_bytes(), "application/pdf"),
        ("../../etc/passwd.txt", b"A name that tries to leave its folder.", "text/plain"),
        ("setup.exe", b"MZ\x90\x00", "application/octet-stream"),
        ("parking.eml", email.message_from_bytes(forwarded.read_bytes(), policy=email.policy.default), ""),
        # Some clients base64-encode a forwarded message, which RFC 2046 does not allow: read it anyway.
        ("storage.eml", storage.read_bytes(), "message/rfc822"),
    ])
    items = load(mail)
    docs = {i.doc_id: i for i in items if isinstance(i, Document)}
    problems = [i for i in items if isinstance(i, RagError)]
    assert set(docs) == {"offer.eml", "offer.eml/terms.pdf", "offer.eml/terms (2).pdf", "offer.eml/.._.._etc_passwd.txt",
                         "offer.eml/parking.eml", "offer.eml/storage.eml"}, problems
    assert "garage on level -2" in docs["offer.eml/terms (2).pdf"].text
    assert "archive room in the basement" in docs["offer.eml/storage.eml"].text
    email_doc = docs["offer.eml"]
    assert email_doc.metadata["title"] == "Lease offer" and email_doc.metadata["format"] == "email"
    assert email_doc.metadata["from"] == "Ana Ribeiro <ana@example.com>" and email_doc.metadata["date"].startswith("2024-04-02")
    assert "From: Ana Ribeiro" in email_doc.text and "signed terms are attached" in email_doc.text
    attached = docs["offer.eml/terms.pdf"]
    assert attached.metadata["parent"] == "offer.eml" and attached.metadata["format"] == "pdf"
    assert attached.sections[0].page == 1 and "five years" in attached.text
    assert attached.origin == email_doc.origin  # removed with the e-mail by --sync
    assert "Three parking spaces" in docs["offer.eml/parking.eml"].text
    (exe,) = problems
    assert isinstance(exe, SkipDocument) and exe.where == "offer.eml/setup.exe" and "unsupported type" in str(exe)


def test_an_html_email_reads_like_a_page(tmp_path):
    html = "<html><body><nav>Home | News</nav><h1>Canteen</h1><p>The canteen opens at 11:30.</p></body></html>"
    (doc,) = documents(make_eml(tmp_path / "news.eml", "Newsletter", None, html=html)).values()
    assert "The canteen opens at 11:30." in doc.text and "<p>" not in doc.text
    assert any(s.headings == ("Canteen",) for s in doc.sections)
    (both,) = documents(make_eml(tmp_path / "both.eml", "Newsletter", "Plain: opens at 11:30.", html=html)).values()
    assert "Plain: opens at 11:30." in both.text and "Canteen" not in both.text  # the plain part, when there is one


def test_an_outlook_message_and_its_attachment(tmp_path):
    msg = make_msg(tmp_path / "lease.msg", "Lease offer (Outlook)", "Dear team,\nthe lease starts on 1 May 2024.",
                   "Ana Ribeiro <ana@example.com>", "it@example.com", [("notes.txt", b"Parking: three spaces.")])
    docs = documents(msg)
    assert set(docs) == {"lease.msg", "lease.msg/notes.txt"}
    assert docs["lease.msg"].metadata["title"] == "Lease offer (Outlook)"
    assert docs["lease.msg"].metadata["date"].startswith("2024-04-02") and "1 May 2024" in docs["lease.msg"].text
    assert docs["lease.msg/notes.txt"].metadata["parent"] == "lease.msg"


def test_a_file_that_is_not_a_message_names_itself(tmp_path):
    fake = tmp_path / "mail.msg"
    fake.write_bytes(b"not a compound file at all" * 40)
    assert "not an Outlook .msg file" in str(only_error(fake))


# -- images and OCR -------------------------------------------------------------------------------

def assert_read_as(text: str, expected: str) -> None:
    """OCR read `expected`: every number and code exactly, the rest to within a character or two
    (ONNX Runtime's kernels differ by CPU kind, and a space can come and go at a margin)."""
    import difflib
    import re

    assert re.findall(r"[\w-]*\d[\w,.-]*\d", text) == re.findall(r"[\w-]*\d[\w,.-]*\d", expected), text
    assert difflib.SequenceMatcher(None, text, expected).ratio() > 0.97, text


def test_an_image_is_read_by_ocr_with_its_confidence(tmp_path):
    text_image(["The approval certificate number is QA-20417.", "It was issued on 12 March 2024."]).save(tmp_path / "cert.png")
    (doc,) = documents(tmp_path / "cert.png").values()
    (section,) = doc.sections
    assert_read_as(section.text, "The approval certificate number is QA-20417.\nIt was issued on 12 March 2024.")
    assert section.metadata["ocr"] is True and section.metadata["ocr_confidence"] > 0.9
    assert doc.metadata["format"] == "image" and doc.metadata["ocr_pages"] == 1 and doc.ocr_seconds > 0
    skipped = only_error(tmp_path / "cert.png", ocr="never")
    assert isinstance(skipped, SkipDocument) and 'ingest.ocr = "never"' in str(skipped)


def test_an_image_that_is_not_one_or_decodes_to_gigapixels_is_refused(tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("a text file with a picture's name")
    assert "not an image" in str(only_error(fake))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # A 60 KB PNG that declares 100,000 x 100,000 pixels: refused from its header, nothing decoded.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10_000_000, 9))
                     + chunk(b"IEND", b""))
    error = only_error(bomb)
    assert "max_unpacked_mb" in str(error) or "bomb" in str(error)


def test_a_scanned_pdf_is_read_page_by_page_and_a_mixed_one_only_where_needed(tmp_path):
    pdf = make_scanned_pdf(tmp_path / "contract.pdf",
                           [["The contract value is EUR 1,284,500."], ["placeholder"]],
                           text_pages={2: "This page has a text layer: the notice period is 90 days."})
    (doc,) = documents(pdf).values()
    scanned, text = doc.sections
    assert (scanned.page, text.page) == (1, 2)
    assert_read_as(scanned.text, "The contract value is EUR 1,284,500.")
    assert scanned.metadata["ocr"] is True
    assert "ocr" not in text.metadata and "notice period is 90 days" in text.text
    assert doc.metadata["ocr_pages"] == 1
    skipped = documents(pdf, ocr="never")["contract.pdf"]
    assert [s.page for s in skipped.sections] == [2]


def test_a_scan_left_unread_by_ocr_never_says_so(tmp_path):
    pdf = make_scanned_pdf(tmp_path / "scan.pdf", [["Only an image of text here."]])
    skipped = only_error(pdf, ocr="never")
    assert isinstance(skipped, SkipDocument) and 'OCR is off (ingest.ocr = "never")' in str(skipped)


def test_ocr_always_reads_pages_that_have_a_text_layer(tmp_path):
    pdf = make_pdf(tmp_path / "typed.pdf", ["Badge photos are taken on Tuesdays."])
    (doc,) = documents(pdf, ocr="always").values()
    assert doc.sections[0].metadata["ocr"] is True and "Badge photos are taken on Tuesdays" in doc.text


def test_low_confidence_lines_are_dropped_and_lines_keep_reading_order():
    box = lambda x, y, w=100, h=20: [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]  # noqa: E731
    found = [(box(300, 100), "right", 0.95), (box(100, 102), "left", 0.97), (box(100, 130), "next line", 0.9),
             (box(100, 160), "#$%~", 0.31), (box(100, 260), "new paragraph", 0.92)]
    text, confidence, kept, dropped = text_of(found, min_confidence=0.5)
    assert text == "left right\nnext line\n\nnew paragraph"
    assert (kept, dropped) == (4, 1) and 0.9 < confidence < 0.97


def test_ocr_models_are_checked_before_use(monkeypatch):
    monkeypatch.setattr(ocr_module, "_VERIFIED", set())
    monkeypatch.setitem(ocr_module.MODEL_SHA256, "ch_PP-OCRv4_det_infer.onnx", "0" * 64)
    with pytest.raises(IngestError, match="does not match its published SHA-256"):
        ocr_module._verified_model_dir()


def test_a_scanned_pdf_held_unchanged_is_not_read_by_ocr_again(make_engine, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    make_scanned_pdf(folder / "certificate.pdf", [["Certificate QA-20417 was issued to the Lisbon office."]])
    engine = make_engine()
    first = engine.index([folder])
    assert (first.added, first.ocr_pages) == (1, 1) and first.ocr_seconds > 0
    assert first.as_dict()["ocr"]["pages"] == 1
    (hit, *_) = engine.search("Which certificate was issued to the Lisbon office?")
    assert hit.doc_id == "certificate.pdf" and hit.location == "page 1" and hit.metadata["ocr"] is True
    again = engine.index([folder], sync=True)
    assert (again.unchanged, again.deleted, again.ocr_pages) == (1, 0, 0)


def test_attachments_are_searchable_and_go_with_their_email(make_engine, tmp_path):
    folder = tmp_path / "mail"
    folder.mkdir()
    terms = make_pdf(tmp_path / "terms.pdf", ["The Lisbon lease is signed for five years with a break after three."])
    make_eml(folder / "offer.eml", "Lease offer", "See the attached terms.", [("terms.pdf", terms.read_bytes(), "application/pdf")])
    engine = make_engine(**{"index.sync_max_delete": 1})
    assert engine.index([folder]).added == 2
    (hit, *_) = engine.search("How long is the Lisbon lease signed for?")
    assert hit.doc_id == "offer.eml/terms.pdf" and hit.location == "page 1"
    (attached,) = [d for d in engine.documents().documents if d.doc_id == "offer.eml/terms.pdf"]
    assert attached.metadata["parent"] == "offer.eml"
    (folder / "offer.eml").unlink()
    report = engine.index([folder], sync=True)
    assert report.deleted == 2


def test_verification_forgives_ocrs_digit_confusions():
    from rag.citations import Passage
    from rag.verify import is_supported, support

    passage = Passage(1, "The approval certificate number is QA-2O417, issued for ２０２４ by the Lisbon office.",
                      "cert.png", "cert.png", "cert", "", 1.0, (1,))
    found = support("QA-20417 [1]", [passage], "What is the approval certificate number?")
    assert found.numbers and is_supported(found, 0.75)
    assert support("2024 [1]", [passage], "For which year?").numbers
    assert not support("QA-20418 [1]", [passage], "What is the number?").numbers


def test_deleting_an_email_deletes_its_attachments_but_never_past_the_callers_filters(make_engine, tmp_path):
    folder = tmp_path / "mail"
    folder.mkdir()
    terms = make_pdf(tmp_path / "terms.pdf", ["The Lisbon lease is signed for five years."])
    inner = make_eml(tmp_path / "inner.eml", "Annex", "The annex is attached.", [("annex.txt", b"Garage included.", "text/plain")])
    for name in ("a.eml", "b.eml"):
        make_eml(folder / name, "Lease offer", "See the attached terms.", [
            ("terms.pdf", terms.read_bytes(), "application/pdf"), ("inner.eml", inner.read_bytes(), "message/rfc822")])
    engine = make_engine()
    assert engine.index([folder]).added == 8
    deleted, missing = engine.delete(["a.eml"])
    assert set(deleted) == {"a.eml", "a.eml/terms.pdf", "a.eml/inner.eml", "a.eml/inner.eml/annex.txt"} and not missing
    # A caller limited to e-mails (a key's filters) deletes the e-mail, and none of its attachments.
    deleted, _ = engine.delete(["b.eml"], filters=["format=email"])
    assert set(deleted) == {"b.eml", "b.eml/inner.eml"}
    left = {d.doc_id for d in engine.documents().documents}
    assert left == {"b.eml/terms.pdf", "b.eml/inner.eml/annex.txt"}
