"""Word .docx: paragraphs and tables in reading order, sectioned by Heading styles."""

from __future__ import annotations

import io
import re
import zipfile

from rag.errors import IngestError
from rag.ingest.text import SectionBuilder
from rag.records import Section

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEADING_STYLE = re.compile(r"^(?:Heading|Überschrift|Titre|标题)\s*(\d)$", re.I)


def _heading_level(style_name: str) -> int | None:
    if style_name.lower() == "title":
        return 0
    match = _HEADING_STYLE.match(style_name.strip())
    return int(match.group(1)) if match else None


def parse_docx(data: bytes) -> tuple[list[Section], str | None]:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    if data.startswith(_OLE_MAGIC):
        raise IngestError("password-protected .docx or legacy .doc file; save it as an unprotected .docx")
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(document.iter_inner_content())
        core_title = (document.core_properties.title or "").strip() or None
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise IngestError(f"corrupt or unreadable .docx: {exc}") from None

    builder = SectionBuilder("\n\n")
    for block in blocks:
        if isinstance(block, Table):
            rows = []
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:
                    value = " ".join(cell.text.split())
                    if not cells or cells[-1] != value:  # merged cells repeat their text
                        cells.append(value)
                rows.append(" | ".join(cells))
            builder.add("\n".join(rows))
            continue
        text = block.text.strip()
        level = _heading_level(block.style.name if block.style is not None else "")
        if level is not None and text:
            builder.heading(level, text)
        elif text:
            builder.add(text)
    return builder.finish(), core_title or builder.first_heading
