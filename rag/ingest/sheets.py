"""Spreadsheets (.xlsx, .xlsm, .xls, .ods): a table section per sheet, read by calamine.

Rows go the CSV table path: the header repeated in every chunk, values as a person reads them
(12 not 12.0, dates as dates), empty rows and columns dropped, a header cell merged across
columns given to each of them (a "Q1" over "Jan" and "Feb" makes "Q1 Jan" and "Q1 Feb"). Each
chunk's `rows` are the sheet's own row numbers, so its location reads "sheet Prices, rows 2-40".

python-calamine (Rust) reads all four formats; on a 100,000-row sheet it read the rows in 0.43 s
against openpyxl's 4.46 s (read-only mode), in about the same memory (benchmarks/formats_bench.py).
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

from rag.config import IngestSettings
from rag.errors import IngestError
from rag.ingest.archive import check_zip
from rag.records import Section

SHEET_EXTENSIONS = (".xlsx", ".xlsm", ".xls", ".ods")


def displayed(value: Any) -> str:
    """A cell's value as a spreadsheet shows it, near enough: formats are not applied."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return " ".join(str(value).split())


def _merged_across(sheet: Any) -> dict[tuple[int, int], tuple[int, int]]:
    """(row, column) of each cell covered by a merge → the merge's first cell."""
    covered: dict[tuple[int, int], tuple[int, int]] = {}
    for (top, left), (bottom, right) in sheet.merged_cell_ranges or ():
        if (bottom - top + 1) * (right - left + 1) > 10_000:
            continue  # a merge over a whole region holds one value, not a header
        for row in range(top, bottom + 1):
            for column in range(left, right + 1):
                if (row, column) != (top, left):
                    covered[(row, column)] = (top, left)
    return covered


def _cell(row: list[Any], r: int, c: int, merged: dict[tuple[int, int], tuple[int, int]]) -> Any:
    """A cell's value; a cell a merge covers on its own row takes the merge's value."""
    value = row[c] if c < len(row) else ""
    if value in ("", None) and (r, c) in merged:
        top, left = merged[(r, c)]
        if top == r and left < len(row):
            return row[left]
    return value


def _is_text(row: list[Any], columns: list[int]) -> bool:
    return all(isinstance(row[c] if c < len(row) else "", str) for c in columns)


def _sheet_section(sheet: Any, name: str) -> Section | None:
    merged = _merged_across(sheet)
    # Rows where a merge spans columns: a group header ("Q1" over "Jan", "Feb") above the header.
    spanning = {top for (row, _), (top, _) in merged.items() if row == top}
    used: set[int] = set()
    for row in sheet.iter_rows():  # first pass: which columns hold anything (rows are not kept)
        used.update(i for i, value in enumerate(row) if value not in ("", None))
    if not used:
        return None
    columns = sorted(used)
    header_parts: list[list[str]] = []
    header_row = -1
    rows: list[str] = []
    numbers: list[int] = []
    for index, row in enumerate(sheet.iter_rows()):  # iter_rows starts at the sheet's first row
        values = [displayed(_cell(row, index, c, merged)) for c in columns]
        if not any(values):
            continue
        if not header_parts or (len(header_parts) == 1 and not rows and header_row in spanning
                                and _is_text(row, columns)):
            header_parts.append(values)
            header_row = index
            continue
        rows.append(" | ".join(values))
        numbers.append(index + 1)
    header = [" ".join(dict.fromkeys(part[i] for part in header_parts if part[i])) for i in range(len(columns))]
    if not rows:
        return Section(text=" | ".join(header), headings=(name,), metadata={"sheet": name})
    return Section(text="", headings=(name,), table_header=" | ".join(header), table_rows=tuple(rows),
                   row_numbers=tuple(numbers), metadata={"sheet": name})


def parse_sheet(data: bytes, settings: IngestSettings, extension: str) -> tuple[list[Section], str | None]:
    from python_calamine import CalamineError, CalamineWorkbook

    if extension != ".xls":  # the legacy format is an OLE file, not a zip
        check_zip(data, settings, extension)
    try:
        workbook = CalamineWorkbook.from_filelike(io.BytesIO(data))
        sections = []
        for meta in workbook.sheets_metadata:
            if str(meta.typ).rsplit(".", 1)[-1] != "WorkSheet":
                continue  # chart and macro sheets hold no rows
            section = _sheet_section(workbook.get_sheet_by_name(meta.name), meta.name)
            if section is not None:
                sections.append(section)
    except CalamineError as exc:
        message = str(exc)
        if "password" in message.lower() or "encrypt" in message.lower():
            raise IngestError(f"password-protected {extension} file; save it without a password") from None
        raise IngestError(f"corrupt or unreadable {extension}: {message}") from None
    return sections, None
