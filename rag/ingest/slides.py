"""PowerPoint .pptx: a section per slide (its title as the heading, text in reading order, the
speaker notes), and each table as a table section whose header every chunk repeats.

Every chunk carries `slide` (its location reads "slide 7"). python-pptx reads the deck, after
archive.py has bounded what its zip may unpack to.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

from lxml import etree

from rag.config import IngestSettings
from rag.errors import IngestError
from rag.ingest.archive import check_zip
from rag.ingest.text import normalize_whitespace
from rag.records import Section


def _shapes_in_reading_order(shapes: Any) -> Iterator[Any]:
    """Shapes top to bottom, then left to right; a group's shapes in its place."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    def position(shape: Any) -> tuple[int, int]:
        return (shape.top or 0, shape.left or 0)

    for shape in sorted(shapes, key=position):
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shapes_in_reading_order(shape.shapes)
        else:
            yield shape


def _table_rows(table: Any) -> list[str]:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            value = " ".join(cell.text.split())
            if cell.is_spanned and cells and cells[-1] == value:
                continue  # a merged cell repeats its text
            cells.append(value)
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _slide_sections(number: int, slide: Any) -> list[Section]:
    title_shape = slide.shapes.title
    title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None and title_shape.has_text_frame else ""
    headings = (title,) if title else ()
    where = {"slide": number}
    texts: list[str] = []
    tables: list[Section] = []
    for shape in _shapes_in_reading_order(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        if getattr(shape, "has_table", False) and shape.has_table:
            rows = _table_rows(shape.table)
            if len(rows) > 1:
                tables.append(Section(text="", headings=headings, table_header=rows[0], table_rows=tuple(rows[1:]),
                                      metadata=where))
            elif rows:
                texts.append(rows[0])
        elif shape.has_text_frame:
            text = "\n".join(p.text for p in shape.text_frame.paragraphs if p.text.strip())
            if text.strip():
                texts.append(text)
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        if notes is not None and notes.text.strip():
            texts.append(f"Notes: {notes.text}")
    body = normalize_whitespace("\n\n".join(texts))
    if not body and not tables and title:
        body = title  # a title slide: its title is its text
    sections = [Section(text=body, headings=headings, metadata=where)] if body else []
    return sections + tables


def parse_pptx(data: bytes, settings: IngestSettings) -> tuple[list[Section], str | None]:
    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    check_zip(data, settings, ".pptx")
    try:
        deck = Presentation(io.BytesIO(data))
        title = (deck.core_properties.title or "").strip() or None
        sections: list[Section] = []
        first_title = None
        for number, slide in enumerate(deck.slides, start=1):
            found = _slide_sections(number, slide)
            if found and first_title is None and found[0].headings:
                first_title = found[0].headings[0]
            sections.extend(found)
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, AttributeError) as exc:
        raise IngestError(f"corrupt or unreadable .pptx: {type(exc).__name__}: {exc}") from None
    except etree.XMLSyntaxError as exc:
        raise IngestError(f"the .pptx holds XML that is corrupt or past the XML parser's safety limits: {exc}") from None
    return sections, title or first_title
