"""Hostile inputs for the loaders, one builder each: it writes a file to `path` and returns it.

Each is a small file that cost the indexing process far more than its size before rag.ingest
bounded it (a zip or PDF bomb, a forged zip header, XML entities, deep nesting, patterns that made
a parser quadratic). Kept apart from the tests so that others (the HTTP upload's) can send them.
Every file ends in, or holds beside its payload, the word HOSTILE where a loader may read text.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MB = 1 << 20
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_DOCUMENT_HEAD = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                  f'<w:document xmlns:w="{_W}"><w:body>').encode()
_DOCUMENT_TAIL = b"<w:p><w:r><w:t>HOSTILE</w:t></w:r></w:p></w:body></w:document>"


@dataclass
class _Part:
    """One zip member as written: `data` already compressed; `size` and `crc` as the header declares."""

    name: str
    data: bytes
    size: int
    crc: int
    method: int = zipfile.ZIP_DEFLATED


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def _part(name: str, data: bytes) -> _Part:
    return _Part(name, _deflate(data), len(data), zlib.crc32(data))


def _inflating(head: bytes, block: bytes, times: int, tail: bytes) -> tuple[bytes, bytes, int, int]:
    """Raw deflate data that inflates to head + block * times + tail, built without holding it all.

    A block packed after a full flush refers to nothing before it, so its bytes can be repeated.
    Returns (deflate data, the first 64 KB it inflates to, its size, its CRC-32).
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed_head = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    packed_block = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    packed_tail = packer.compress(tail) + packer.flush()
    crc = zlib.crc32(head)
    for _ in range(times):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(tail, crc)
    start = (head + block * max(1, 65536 // max(len(block), 1) + 1))[:65536]
    return packed_head + packed_block * times + packed_tail, start, len(head) + len(block) * times + len(tail), crc


def _write_zip(path: Path, parts: list[_Part]) -> Path:
    """A zip written by hand, so that a header can say what the data is not."""
    out, directory = bytearray(), bytearray()
    for part in parts:
        name = part.name.encode()
        offset = len(out)
        fields = (part.method, 0, 0x21, part.crc, len(part.data), part.size, len(name))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, *fields, 0) + name + part.data
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, *fields, 0, 0, 0, 0, 0, offset) + name
    out += directory + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(parts), len(parts), len(directory),
                                   len(out), 0)
    path.write_bytes(bytes(out))
    return path


@cache
def _blank_docx_parts() -> tuple[tuple[str, bytes], ...]:
    """python-docx's blank document, part by part."""
    import docx

    buffer = io.BytesIO()
    docx.Document().save(buffer)
    with zipfile.ZipFile(buffer) as archive:
        return tuple((info.filename, archive.read(info)) for info in archive.infolist())


def _docx(path: Path, document: _Part | bytes, extra: list[_Part] = (), replace: dict[str, bytes] = {}) -> Path:
    """A blank python-docx document with word/document.xml (and any part in `replace`) replaced."""
    if isinstance(document, bytes):
        document = _part("word/document.xml", document)
    parts = [document if name == "word/document.xml" else _part(name, replace.get(name, data))
             for name, data in _blank_docx_parts()]
    return _write_zip(path, parts + list(extra))


def zip_bomb_docx(path: Path, inflated_mb: int = 1024) -> Path:
    """A .docx of about 1 MB whose document.xml inflates to `inflated_mb` MB of blanks, declared truly."""
    data, _, size, crc = _inflating(_DOCUMENT_HEAD, b" " * MB, inflated_mb, _DOCUMENT_TAIL)
    return _docx(path, _Part("word/document.xml", data, size, crc))


def lying_header_docx(path: Path, declared: int = 4096, inflated_mb: int = 1024) -> Path:
    """A .docx whose document.xml declares `declared` bytes (CRC to match) but inflates to `inflated_mb` MB.

    zipfile stops at the declared size, but ZipFile.read inflates up to 1 GiB in one piece first.
    """
    data, start, _, _ = _inflating(_DOCUMENT_HEAD, b" " * MB, inflated_mb, _DOCUMENT_TAIL)
    return _docx(path, _Part("word/document.xml", data, declared, zlib.crc32(start[:declared])))


def billion_laughs_docx(path: Path) -> Path:
    """A .docx whose document.xml defines entities that would expand to 10^9 "lol"s (3 GB)."""
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    document = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<!DOCTYPE w:document [{entities}]>'
                f'<w:document xmlns:w="{_W}"><w:body><w:p><w:r><w:t>&lol9; HOSTILE</w:t></w:r></w:p>'
                '</w:body></w:document>')
    return _docx(path, document.encode())


def deep_xml_docx(path: Path, depth: int = 100_000) -> Path:
    """A .docx whose document.xml nests `depth` elements (Word nests a few dozen)."""
    return _docx(path, _DOCUMENT_HEAD + b"<w:p>" * depth + b"HOSTILE" + b"</w:p>" * depth + _DOCUMENT_TAIL)


def many_parts_docx(path: Path, parts: int = 20_000) -> Path:
    """A .docx of `parts` extra empty parts (Word writes 10-200)."""
    return _docx(path, _DOCUMENT_HEAD + _DOCUMENT_TAIL, [_part(f"x/{i}", b"") for i in range(parts)])


def many_elements_docx(path: Path, paragraphs: int = 2_100_000) -> Path:
    """A .docx of `paragraphs` empty paragraphs, stored unpacked (a plain big file, no bomb ratio).

    python-docx holds about 130 bytes per element and reads 40,000 paragraphs a second.
    """
    xml = _DOCUMENT_HEAD + b"<w:p/>" * paragraphs + _DOCUMENT_TAIL
    return _docx(path, _Part("word/document.xml", xml, len(xml), zlib.crc32(xml), zipfile.ZIP_STORED))


def many_paragraphs_docx(path: Path, paragraphs: int = 50_000, styles: int = 2000) -> Path:
    """A .docx of `paragraphs` short paragraphs and `styles` extra styles, 60 KB.

    python-docx looks a paragraph's style up through every style: 50,000 paragraphs of its blank
    document's 160 styles took 52 s, so these would take over 10 minutes read that way.
    """
    paragraph = b"<w:p><w:r><w:t>Same line of text.</w:t></w:r></w:p>"
    extra = "".join(f'<w:style w:type="paragraph" w:styleId="Extra{i}"><w:name w:val="Extra {i}"/></w:style>'
                    for i in range(styles)).encode()
    blank_styles = dict(_blank_docx_parts())["word/styles.xml"]
    return _docx(path, _DOCUMENT_HEAD + paragraph * paragraphs + _DOCUMENT_TAIL,
                 replace={"word/styles.xml": blank_styles.replace(b"</w:styles>", extra + b"</w:styles>")})


def lzma_docx(path: Path) -> Path:
    """A .docx whose document.xml is packed with LZMA, which zipfile inflates with no size bound."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in _blank_docx_parts():
            method = zipfile.ZIP_LZMA if name == "word/document.xml" else zipfile.ZIP_DEFLATED
            archive.writestr(name, data, compress_type=method)
    return path


def flate_bomb_pdf(path: Path, inflated_mb: int = 1024) -> Path:
    """A one-page PDF of about 1 MB whose content stream inflates to `inflated_mb` MB of blanks.

    The page also shows the text HOSTILE. PDFium inflates the whole stream before reading it.
    """
    raw, _, size, _ = _inflating(b"", b" " * MB, inflated_mb, b"")
    adler = 1
    block = b" " * MB
    for _ in range(inflated_mb):
        adler = zlib.adler32(block, adler)
    bomb = b"\x78\xda" + raw + struct.pack(">I", adler)
    text = b"BT /F1 24 Tf 72 720 Td (HOSTILE) Tj ET\n"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents [5 0 R 6 0 R] >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream" % (len(bomb), bomb),
    ]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


# (opening, closing) of one level of each nested HTML shape; "unclosed" never closes.
HTML_SHAPES = {
    "div": ("<div>x", "</div>"),
    "table": ("<table><tr><td>x", "</td></tr></table>"),
    "list": ("<ul><li>x", "</li></ul>"),
    "inline": ("<b><i><span>x", "</span></i></b>"),
    "blockquote": ("<blockquote>x", "</blockquote>"),
    "unclosed": ("<div>x", ""),
}


def nested_html(path: Path, shape: str = "div", size: int = 2 * MB) -> Path:
    """About `size` bytes of HTML nested as deep as that allows, in one of HTML_SHAPES, then HOSTILE.

    Each level holds one "x", so the text is as many x's as there are levels.
    """
    opening, closing = HTML_SHAPES[shape]
    levels = size // (len(opening) + len(closing))
    path.write_text(f"<html><body>{opening * levels}{closing * levels}<p>HOSTILE</p></body></html>")
    return path


def many_siblings_html(path: Path, size: int = 2 * MB) -> Path:
    """About `size` bytes of <p>x</p> side by side: not deep, yet BeautifulSoup's insert_before looked
    each one up among its siblings, so 2 MB ran past 10 minutes."""
    path.write_text(f"<html><body>{'<p>x</p>' * (size // 8)}<p>HOSTILE</p></body></html>")
    return path


def stray_end_tags_html(path: Path, depth: int = 100_000, ends: int | None = None) -> Path:
    """`depth` unclosed <div>s, then `ends` (default: as many) end tags that close nothing.

    lxml's parser looks for each end tag's element through every open one: depth x ends steps.
    """
    ends = depth if ends is None else ends
    path.write_text(f"<html><body>{'<div>x' * depth}{'</span>' * ends}<p>HOSTILE</p></body></html>")
    return path


def nested_sections_html(path: Path, repeats: int = 400, depth: int = 400) -> Path:
    """Nests of `depth` <div>s under a heading each, `repeats` times: deep, but within the limit."""
    nest = "<div>x" * depth + "</div>" * depth
    path.write_text("<html><body>" + "".join(f"<h2>Part {i}</h2>{nest}" for i in range(repeats))
                    + "<p>HOSTILE</p></body></html>")
    return path


def blank_run_html(path: Path, blanks: int = 2 * MB) -> Path:
    """One paragraph with `blanks` spaces inside: the table-cell cleanup was quadratic in the run."""
    path.write_text(f"<html><body><p>a{' ' * blanks}b</p><p>HOSTILE</p></body></html>")
    return path


def deep_json(path: Path, depth: int = 100_000) -> Path:
    """`depth` nested arrays; as .jsonl, one such line between two good records."""
    value = "[" * depth + "]" * depth
    if path.suffix == ".jsonl":
        good = [json.dumps({"id": f"good-{i}", "text": f"HOSTILE neighbour {i}"}) for i in (1, 2)]
        path.write_text(f"{good[0]}\n{value}\n{good[1]}\n")
    else:
        path.write_text(value)
    return path


def deep_record_jsonl(path: Path, depth: int = 600) -> Path:
    """A record whose metadata nests `depth` arrays: Python reads it, but writing it back may fail."""
    record = '{"id": "deep", "text": "HOSTILE", "meta": ' + "[" * depth + "]" * depth + "}"
    path.write_text(record + "\n" + json.dumps({"id": "fine", "text": "A fine record."}) + "\n")
    return path


def huge_csv_field(path: Path, megabytes: int = 20) -> Path:
    """A CSV whose second row opens a quote that never closes: one field of `megabytes` MB."""
    path.write_text('name,note\nfirst,"HOSTILE\n' + "more text, and more\n" * (megabytes * MB // 20))
    return path


def wide_csv_line(path: Path, fields: int = 2_000_000) -> Path:
    """A CSV of a header and one row of `fields` fields."""
    path.write_text("name,note\n" + "HOSTILE," * fields + "end\n")
    return path


def nested_markdown(path: Path, size: int = 2 * MB) -> Path:
    """Markdown nested and padded where a regex could backtrack: blockquotes, lists, heading lines.

    "# a", 4,000 spaces and "b" took the heading regex 76 s; this holds lines of `size` / 8 each.
    """
    line = size // 8
    path.write_text("\n".join([
        "---",  # front matter that never ends
        "not front matter\n" * (line // 17),
        ">" * line + " deep quote",
        "".join("  " * (i % 500) + "- item\n" for i in range(line // 500)),
        "# a" + " " * line + "b",
        "# " + "[" * line + "](" + "x" * 100,
        "HOSTILE",
    ]))
    return path
