"""CSV: one header and a row per line, so the chunker can repeat the header in every chunk."""

from __future__ import annotations

import csv
import io

from rag.errors import IngestError, SkipDocument
from rag.ingest.text import decode_text
from rag.records import Section


def parse_csv(data: bytes) -> tuple[list[Section], str | None]:
    text = decode_text(data)
    sample = text[:16384]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    rows = (row for row in reader if any(c.strip() for c in row))
    try:
        # Each row joined as it is read: a list of every row's fields took 60 bytes a field.
        header = [" ".join(c.split()) for c in next(rows, [])]
        body = tuple(" | ".join(" ".join(c.split()) for c in row) for row in rows)
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise IngestError(f"the field read at line {reader.line_num:,} grows past {csv.field_size_limit():,} "
                              f"characters, the most Python's csv reader takes: most likely a quote (\") opened "
                              f"and never closed; close it, or split the field") from None
        raise IngestError(f"malformed CSV on line {reader.line_num:,}: {exc}") from None
    if not header:
        raise SkipDocument("empty file")
    if not body:
        raise SkipDocument("CSV has a header but no rows")
    return [Section(text="", table_header=" | ".join(header), table_rows=body)], None
