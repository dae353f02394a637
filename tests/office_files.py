"""Files of the formats issue 32 added, made here: slide decks (python-pptx), workbooks
(xlsxwriter), e-mails (the standard library), Outlook .msg files (a small MS-CFB writer below:
no library writes them), images and scanned PDFs (Pillow, with DejaVu Sans from fonts-dejavu).
"""

from __future__ import annotations

import datetime as dt
import struct
from email.message import EmailMessage
from pathlib import Path
from typing import Any

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def make_pptx(path: Path, slides: list[dict[str, Any]], title: str | None = None) -> Path:
    """Each slide: {"title", "body": [lines], "table": [[cells]], "notes"}."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    if title:
        deck.core_properties.title = title
    for spec in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
        slide.shapes.title.text = spec.get("title", "")
        top = 1.5
        if spec.get("body"):
            box = slide.shapes.add_textbox(Inches(0.5), Inches(top), Inches(9), Inches(1.5))
            box.text_frame.text = spec["body"][0]
            for line in spec["body"][1:]:
                box.text_frame.add_paragraph().text = line
            top += 2
        if spec.get("table"):
            rows = spec["table"]
            shape = slide.shapes.add_table(len(rows), len(rows[0]), Inches(0.5), Inches(top), Inches(9), Inches(2))
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    shape.table.cell(r, c).text = str(value)
        if spec.get("notes"):
            slide.notes_slide.notes_text_frame.text = spec["notes"]
    deck.save(path)
    return path


def make_xlsx(path: Path, sheets: dict[str, list[list[Any]]], merges: dict[str, list[str]] | None = None,
              start_row: int = 0) -> Path:
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(path))
    date_format = workbook.add_format({"num_format": "yyyy-mm-dd"})
    for name, rows in sheets.items():
        sheet = workbook.add_worksheet(name)
        for merge in (merges or {}).get(name, []):
            cells, value = merge.split("=", 1)
            sheet.merge_range(cells, value)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value is None:
                    continue
                if isinstance(value, dt.date):
                    sheet.write_datetime(start_row + r, c, dt.datetime.combine(value, dt.time()), date_format)
                else:
                    sheet.write(start_row + r, c, value)
    workbook.close()
    return path


def make_eml(path: Path, subject: str, body: str | None, attachments: list[tuple[str, Any, str]] = (),
             html: str | None = None, sender: str = "Ana Ribeiro <ana@example.com>",
             to: str = "it-team@example.com", date: str = "Tue, 02 Apr 2024 09:30:00 +0000") -> Path:
    message = EmailMessage()
    message["Subject"], message["From"], message["To"], message["Date"] = subject, sender, to, date
    if body is not None:
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
    elif html is not None:
        message.set_content(html, subtype="html")
    for name, data, mime in attachments:
        if isinstance(data, EmailMessage):  # a forwarded message, attached as message/rfc822
            message.add_attachment(data, filename=name)
            continue
        main, sub = mime.split("/")
        message.add_attachment(data, maintype=main, subtype=sub, filename=name)
    path.write_bytes(bytes(message))
    return path


def text_image(lines: list[str], size: tuple[int, int] = (1240, 1754), font_px: int = 25, margin: int = 100,
               font: str = FONT) -> Any:
    """A white page with black text, as a scan at 150 dpi would be (25 px: 12 pt)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    face = ImageFont.truetype(font, font_px)
    for number, line in enumerate(lines):
        draw.text((margin, margin + number * int(font_px * 1.6)), line, font=face, fill=0)
    return image


def make_scanned_pdf(path: Path, pages: list[list[str]], text_pages: dict[int, str] | None = None) -> Path:
    """A PDF whose pages are images of text (no text layer); `text_pages` (1-based) are real text
    pages instead, for a mixed PDF."""
    import pypdfium2 as pdfium
    from PIL import Image

    images: list[Image.Image] = [text_image(lines) for lines in pages]
    scans = path.with_suffix(".scan.pdf")
    images[0].save(scans, save_all=True, append_images=images[1:], resolution=150)
    if not text_pages:
        scans.rename(path)
        return path
    document = pdfium.PdfDocument(scans)
    from conftest import make_pdf

    for number, text in sorted(text_pages.items()):
        single = make_pdf(path.with_suffix(f".text{number}.pdf"), [text])
        document.import_pages(pdfium.PdfDocument(single), index=number - 1)
        document.del_page(number)  # the scanned page that stood there
    document.save(path)
    return path


# -- Outlook .msg: a compound file (MS-CFB v3) of MAPI property streams ----------------------------

_FREE, _END, _FAT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
_SECTOR, _MINI, _CUTOFF = 512, 64, 4096


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le")


def _properties(header: bytes, fixed: dict[int, int]) -> bytes:
    """A __properties_version1.0 stream: the header, then 16 bytes per fixed-size property."""
    entries = b"".join(struct.pack("<IIQ", tag, 6, value) for tag, value in fixed.items())
    return header + entries


def _filetime(when: dt.datetime) -> int:
    """100-nanosecond intervals since 1601, as MAPI stores times."""
    return int((when - dt.datetime(1601, 1, 1, tzinfo=dt.timezone.utc)).total_seconds() * 10_000_000)


def make_msg(path: Path, subject: str, body: str, sender: str, to: str,
             attachments: list[tuple[str, bytes]] = ()) -> Path:
    """An Outlook message as extract-msg reads it: class IPM.Note, subject, body, the transport
    headers (from, to, date) and attachments by value."""
    headers = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Tue, 02 Apr 2024 09:30:00 +0000\r\n\r\n"
    root: dict[str, Any] = {
        "__substg1.0_001A001F": _utf16("IPM.Note"),
        "__substg1.0_0037001F": _utf16(subject),
        "__substg1.0_1000001F": _utf16(body),
        "__substg1.0_0C1A001F": _utf16(sender),
        "__substg1.0_0E04001F": _utf16(to),
        "__substg1.0_007D001F": _utf16(headers),
        "__properties_version1.0": _properties(struct.pack("<8sIIII8s", b"", 0, len(attachments), 0,
                                                           len(attachments), b""),
                                               {0x00390040: _filetime(dt.datetime(2024, 4, 2, 9, 30, tzinfo=dt.timezone.utc))}),
        "__nameid_version1.0": {"__substg1.0_00020102": b"", "__substg1.0_00030102": b"",
                                "__substg1.0_00040102": b""},
    }
    for number, (name, data) in enumerate(attachments):
        root[f"__attach_version1.0_#{number:08X}"] = {
            "__substg1.0_3707001F": _utf16(name),
            "__substg1.0_3704001F": _utf16(name[:12]),
            "__substg1.0_3001001F": _utf16(name),
            "__substg1.0_37010102": data,
            "__properties_version1.0": _properties(b"\0" * 8, {0x37050003: 1, 0x0E210003: number}),
        }
    path.write_bytes(_compound_file(root))
    return path


def _compound_file(tree: dict[str, Any]) -> bytes:
    """A compound file holding `tree` (name → bytes for a stream, dict for a storage)."""
    entries: list[dict[str, Any]] = [{"name": "Root Entry", "type": 5, "children": []}]

    def add(folder: dict[str, Any], parent: int) -> None:
        for name, value in folder.items():
            entries.append({"name": name, "type": 1 if isinstance(value, dict) else 2, "children": [],
                            "data": None if isinstance(value, dict) else value})
            entries[parent]["children"].append(len(entries) - 1)
            if isinstance(value, dict):
                add(value, len(entries) - 1)

    add(tree, 0)
    sectors: list[bytes] = []
    fat: list[int] = []

    def chain(data: bytes, marker: int | None = None) -> int:
        if not data:
            return _END
        first = len(sectors)
        count = (len(data) + _SECTOR - 1) // _SECTOR
        for i in range(count):
            sectors.append(data[i * _SECTOR:(i + 1) * _SECTOR].ljust(_SECTOR, b"\0"))
            fat.append(marker if marker is not None else (first + i + 1 if i + 1 < count else _END))
        return first

    mini = bytearray()
    minifat: list[int] = []
    for entry in entries:
        data = entry.get("data")
        if data is None:
            continue
        if len(data) < _CUTOFF:
            entry["start"] = len(mini) // _MINI if data else _END
            count = (len(data) + _MINI - 1) // _MINI
            for i in range(count):
                minifat.append(len(minifat) + 1 if i + 1 < count else _END)
            mini += data.ljust(count * _MINI, b"\0")
        else:
            entry["start"] = chain(data)
    entries[0]["start"], entries[0]["size"] = chain(bytes(mini)), len(mini)
    minifat_bytes = b"".join(struct.pack("<I", v) for v in minifat)
    minifat_start = chain(minifat_bytes)
    for entry in entries:  # siblings: each storage's children chained by their right sibling
        kids = sorted(entry["children"], key=lambda i: (len(entries[i]["name"]), entries[i]["name"].upper()))
        entry["child"] = kids[0] if kids else _FREE
        for a, b in zip(kids, kids[1:] + [None]):
            entries[a]["right"] = b if b is not None else _FREE
    directory = b""
    for entry in entries:
        name = _utf16(entry["name"]) + b"\0\0"
        data = entry.get("data")
        size = entry.get("size", len(data) if data is not None else 0)
        directory += struct.pack("<64sHBBIII16sIQQIQ", name, len(name), entry["type"], 1, _FREE,
                                 entry.get("right", _FREE), entry["child"], b"", 0, 0, 0,
                                 entry.get("start", _END if entry["type"] != 1 else 0), size)
    directory = directory.ljust(-(-len(directory) // _SECTOR) * _SECTOR, b"\0")
    directory_start = chain(directory)
    # The FAT's own sectors: enough for every sector, themselves included.
    fat_count = 1
    while (len(sectors) + fat_count) * 4 > fat_count * _SECTOR:
        fat_count += 1
    fat_start = len(sectors)
    fat.extend([_FAT] * fat_count)
    table = b"".join(struct.pack("<I", v) for v in fat).ljust(fat_count * _SECTOR, b"\xff")
    sectors.extend(table[i * _SECTOR:(i + 1) * _SECTOR] for i in range(fat_count))
    difat = [fat_start + i for i in range(fat_count)] + [_FREE] * (109 - fat_count)
    header = struct.pack("<8s16sHHHHH6sIIIIIIIII", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"", 0x3E, 3, 0xFFFE,
                         9, 6, b"", 0, fat_count, directory_start, 0, _CUTOFF,
                         minifat_start if minifat else _END, len(minifat_bytes) // _SECTOR + (1 if len(minifat_bytes) % _SECTOR else 0),
                         _END, 0)
    header += b"".join(struct.pack("<I", v) for v in difat)
    return header + b"".join(sectors)


def make_xls(path: Path, name: str, rows: list[list[Any]]) -> Path:
    """A legacy Excel 97-2003 workbook (xlwt)."""
    import xlwt

    book = xlwt.Workbook()
    sheet = book.add_sheet(name)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value is not None:
                sheet.write(r, c, value)
    book.save(str(path))
    return path


def make_ods(path: Path, name: str, rows: list[list[Any]]) -> Path:
    """An OpenDocument spreadsheet, written as its specification lays it out (a zip of XML)."""
    import zipfile
    from xml.sax.saxutils import escape

    def cell(value: Any) -> str:
        if value is None:
            return "<table:table-cell/>"
        if isinstance(value, (int, float)):
            return f'<table:table-cell office:value-type="float" office:value="{value}"><text:p>{value}</text:p></table:table-cell>'
        return f'<table:table-cell office:value-type="string"><text:p>{escape(str(value))}</text:p></table:table-cell>'

    body = "".join(f"<table:table-row>{''.join(cell(v) for v in row)}</table:table-row>" for row in rows)
    content = ('<?xml version="1.0" encoding="UTF-8"?><office:document-content '
               'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
               'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
               'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
               f'<office:body><office:spreadsheet><table:table table:name="{escape(name)}">{body}</table:table>'
               '</office:spreadsheet></office:body></office:document-content>')
    manifest = ('<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
                'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
                '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
                '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>')
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet", compress_type=zipfile.ZIP_STORED)
        archive.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("META-INF/manifest.xml", manifest, compress_type=zipfile.ZIP_DEFLATED)
    return path
