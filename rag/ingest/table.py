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
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise IngestError(f"malformed CSV: {exc}") from None
    if not rows:
        raise SkipDocument("empty file")
    header = [" ".join(c.split()) for c in rows[0]]
    body = tuple(" | ".join(" ".join(c.split()) for c in row) for row in rows[1:])
    if not body:
        raise SkipDocument("CSV has a header but no rows")
    return [Section(text="", table_header=" | ".join(header), table_rows=body)], None
