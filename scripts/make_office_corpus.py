#!/usr/bin/env python3
"""Generate the sample corpus's slide deck, workbook, e-mail (with an attached PDF) and scanned PDF.

The documents that exercise issue 32's formats, from text held below so that a diff shows what
they say: `facilities/facilities-review-q3-2025.pptx`, `finance/budget-2025.xlsx`,
`facilities/lisbon-lease-renewal.eml` (attaching `lease-summary.pdf`) and
`facilities/fire-safety-certificate.pdf`, a PDF made by rendering a typed page to an image at
150 dpi, so it has no text layer and is read by OCR.

    python scripts/make_office_corpus.py            # writes into ./corpora
    python scripts/make_office_corpus.py --out DIR

Deterministic: fixed dates and metadata, zip entries with a fixed timestamp.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sample_corpus import FIXED_DATE, _normalise_zip, build_pdf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent

DECK = {
    "path": "facilities/facilities-review-q3-2025.pptx",
    "title": "Facilities review, Q3 2025",
    "slides": [
        {"title": "Facilities review, Q3 2025",
         "body": ["Workplace Operations, for the leadership meeting of 14 October 2025."]},
        {"title": "Lisbon HQ energy",
         "body": ["Solar panels on the roof covered 31% of the building's electricity in Q3.",
                  "Target for 2026: 40% of the building's electricity from the roof."],
         "notes": "The heat pump on floor 4 will be replaced in February 2026; floor 4 works from home that week."},
        {"title": "Meeting rooms at the Lisbon HQ",
         "table": [["Room", "Floor", "Seats", "Video"], ["Douro", "1", "24", "video wall"], ["Tagus", "2", "12", "Zoom Rooms"],
                   ["Mondego", "3", "6", "none"], ["Sado", "4", "10", "Zoom Rooms"]]},
        {"title": "Next steps",
         "body": ["Bicycle storage will grow from 30 to 48 racks by March 2026.",
                  "A second EV charger bank (6 chargers) is planned for the garage on level -2."]},
    ],
}

BUDGET = {
    "path": "finance/budget-2025.xlsx",
    "sheets": {
        "Budget": [["", "2025 budget, EUR thousands", "", "", "", ""],
                   ["Department", "Q1", "Q2", "Q3", "Q4", "Owner"],
                   ["Engineering", 1250, 1310, 1290, 1400, "Tiago Almeida"],
                   ["Facilities", 310, 320, 305, 330, "Rui Costa"],
                   ["Marketing", 420, 380, 450, 510, "Inês Duarte"],
                   ["Sales", 690, 700, 720, 760, "Mark Jensen"],
                   ["People", 240, 240, 255, 260, "Sofia Pereira"]],
        "Notes": [["Note"], ["Figures are approved by the CFO in the December planning round."],
                  ["Unspent Q4 budget does not carry over into 2026."]],
    },
    "merges": {"Budget": "B1:E1"},
}

LEASE_SUMMARY = {
    "path": "lease-summary.pdf",
    "title": "Lisbon HQ lease renewal - summary",
    "subject": "Summary of the renewed lease of the Lisbon headquarters",
    "footer": "Meridian Robotics - Facilities - internal",
    "pages": [[
        ("h1", "Lisbon HQ lease renewal - summary"),
        ("p", "The landlord, Tagus Estates Lda., has agreed to renew the lease of the Lisbon headquarters in "
              "Parque das Nacoes."),
        ("bullets", ["New term: 1 January 2026 to 31 December 2030.",
                     "Monthly rent: EUR 48,500, indexed once a year to the Portuguese consumer price index.",
                     "Notice period: 6 months before the end of the term.",
                     "The garage's 40 spaces on level -2 stay included in the rent."]),
    ]],
}

LEASE_MAIL = {
    "path": "facilities/lisbon-lease-renewal.eml",
    "subject": "Lisbon HQ lease renewed until 2030",
    "from": "Rui Costa <rui.costa@meridian-robotics.example>",
    "to": "leadership@meridian-robotics.example",
    "date": "Tue, 02 Sep 2025 10:15:00 +0100",
    "body": ("Hi all,\n\nthe landlord has agreed to renew the Lisbon HQ lease for five more years. The summary "
             "of the new terms is attached.\n\nQuestions go to facilities@meridian-robotics.example.\n\nBest,\nRui Costa\n"
             "Head of Facilities"),
}

CERTIFICATE = {
    "path": "facilities/fire-safety-certificate.pdf",
    "title": "Fire safety certificate - Lisbon HQ",
    "subject": "Fire safety certificate of the Lisbon headquarters",
    "footer": "Autoridade Nacional de Emergencia e Protecao Civil - copy for Meridian Robotics",
    "pages": [[
        ("h1", "Fire Safety Certificate"),
        ("p", "Certificate number: FS-2025-0419"),
        ("p", "Issued to: Meridian Robotics, Lisbon HQ, Parque das Nacoes, Lisbon"),
        ("p", "Date of inspection: 18 June 2025"),
        ("p", "Valid until: 30 June 2027"),
        ("p", "Maximum occupancy: 420 persons"),
        ("p", "Inspector: Carla Mendes"),
        ("p", "The building meets the fire safety requirements for offices and light industrial use. The next "
              "inspection must take place before the certificate expires."),
    ]],
}


def build_deck(spec: dict) -> bytes:
    from pptx import Presentation
    from pptx.util import Inches, Pt

    deck = Presentation()
    deck.core_properties.title = spec["title"]
    deck.core_properties.author = "Meridian Robotics"
    deck.core_properties.created = deck.core_properties.modified = FIXED_DATE.replace(tzinfo=None)
    deck.core_properties.last_modified_by = "Meridian Robotics"
    deck.core_properties.revision = 1
    for slide_spec in spec["slides"]:
        slide = deck.slides.add_slide(deck.slide_layouts[5])
        slide.shapes.title.text = slide_spec["title"]
        if "body" in slide_spec:
            box = slide.shapes.add_textbox(Inches(0.6), Inches(1.8), Inches(8.8), Inches(3))
            box.text_frame.word_wrap = True
            box.text_frame.text = slide_spec["body"][0]
            for line in slide_spec["body"][1:]:
                box.text_frame.add_paragraph().text = line
            for paragraph in box.text_frame.paragraphs:
                paragraph.runs[0].font.size = Pt(20)
        if "table" in slide_spec:
            rows = slide_spec["table"]
            shape = slide.shapes.add_table(len(rows), len(rows[0]), Inches(0.6), Inches(1.8), Inches(8.8), Inches(3))
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    shape.table.cell(r, c).text = value
        if "notes" in slide_spec:
            slide.notes_slide.notes_text_frame.text = slide_spec["notes"]
    out = io.BytesIO()
    deck.save(out)
    return _normalise_zip(out.getvalue())


def build_workbook(spec: dict) -> bytes:
    import xlsxwriter

    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    book.set_properties({"title": "2025 budget", "author": "Meridian Robotics", "created": FIXED_DATE.replace(tzinfo=None)})
    bold = book.add_format({"bold": True})
    for name, rows in spec["sheets"].items():
        sheet = book.add_worksheet(name)
        merge = spec["merges"].get(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value != "":
                    sheet.write(r, c, value, bold if r <= 1 else None)
        if merge:
            first = rows[0][1]
            sheet.merge_range(merge, first, bold)
    book.close()
    return _normalise_zip(out.getvalue())


def build_mail(spec: dict, attachment: bytes) -> bytes:
    message = EmailMessage()
    message["Subject"], message["From"], message["To"], message["Date"] = (spec["subject"], spec["from"], spec["to"],
                                                                           spec["date"])
    message["Message-ID"] = "<lease-renewal-2025@meridian-robotics.example>"
    message.set_content(spec["body"])
    message.add_attachment(attachment, maintype="application", subtype="pdf", filename=LEASE_SUMMARY["path"])
    for part in message.walk():  # a fixed boundary: the same bytes on every run
        if part.is_multipart():
            part.set_boundary("==rag-sample-boundary==")
    return message.as_bytes(policy=SMTP)


def build_scan(spec: dict) -> bytes:
    """The typed certificate rendered to a 150 dpi gray image, saved as a PDF of that image alone."""
    import pypdfium2 as pdfium
    from PIL import Image

    typed = pdfium.PdfDocument(build_pdf(spec))
    image = typed[0].render(scale=150 / 72, grayscale=True).to_pil().convert("L")
    out = io.BytesIO()
    Image.Image.save(image, out, format="PDF", resolution=150, title=spec["title"], author="Meridian Robotics",
                     creationDate=time.gmtime(FIXED_DATE.timestamp()), modDate=time.gmtime(FIXED_DATE.timestamp()))
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "corpora")
    args = parser.parse_args(argv)
    outputs = {
        DECK["path"]: build_deck(DECK),
        BUDGET["path"]: build_workbook(BUDGET),
        LEASE_MAIL["path"]: build_mail(LEASE_MAIL, build_pdf(LEASE_SUMMARY)),
        CERTIFICATE["path"]: build_scan(CERTIFICATE),
    }
    for path, data in outputs.items():
        target = args.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        print(f"wrote {target} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
