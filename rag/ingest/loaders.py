"""Pick a parser by file extension and wrap its output with the metadata every document has."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator

from rag.config import IngestSettings
from rag.errors import IngestError, RagError, SkipDocument
from rag.ingest.discover import SourceFile
from rag.ingest.docx import parse_docx
from rag.ingest.html import parse_html
from rag.ingest.markdown import parse_markdown
from rag.ingest.pdf import parse_pdf
from rag.ingest.json_records import iter_json_records
from rag.ingest.table import parse_csv
from rag.ingest.text import decode_text, normalize_whitespace
from rag.records import Document, Section

Parsed = tuple[list[Section], str | None]
# A parser gets the file's bytes and the [ingest] settings, whose limits bound what it may unpack.
Parser = Callable[[bytes, IngestSettings], Parsed]


def parse_plain_text(data: bytes) -> Parsed:
    text = normalize_whitespace(decode_text(data))
    return ([Section(text=text)] if text else []), None


def _bytes_only(parse: Callable[[bytes], Parsed]) -> Parser:
    """A parser that needs no settings, called like those that do."""
    return lambda data, settings: parse(data)


LOADERS: dict[str, tuple[str, Parser]] = {
    ".txt": ("text", _bytes_only(parse_plain_text)),
    ".text": ("text", _bytes_only(parse_plain_text)),
    ".md": ("markdown", _bytes_only(parse_markdown)),
    ".markdown": ("markdown", _bytes_only(parse_markdown)),
    ".html": ("html", parse_html),
    ".htm": ("html", parse_html),
    ".pdf": ("pdf", parse_pdf),
    ".docx": ("docx", parse_docx),
    ".csv": ("csv", _bytes_only(parse_csv)),
}
RECORD_EXTENSIONS = (".json", ".jsonl")


def supported_extensions() -> list[str]:
    return sorted([*LOADERS, *RECORD_EXTENSIONS])


def load_source(src: SourceFile, settings: IngestSettings) -> Iterator[Document | RagError]:
    """Documents of one file, or errors that say why (a JSONL file may yield both)."""
    suffix = src.path.suffix.lower()
    if suffix not in LOADERS and suffix not in RECORD_EXTENSIONS:
        yield SkipDocument(f"unsupported file type '{suffix or src.path.name}' "
                           f"(supported: {' '.join(supported_extensions())})")
        return
    try:
        stat = src.path.stat()
        if stat.st_size > settings.max_file_mb * 1024 * 1024:
            yield SkipDocument(f"{stat.st_size / 2**20:.0f} MB is over ingest.max_file_mb ({settings.max_file_mb:g} MB)")
            return
        if stat.st_size == 0:
            yield SkipDocument("empty file")
            return
        if suffix in RECORD_EXTENSIONS:
            yield from iter_json_records(src.path, src.rel, src.source, settings, stat.st_mtime, str(src.real))
            return
        data = src.path.read_bytes()
    except PermissionError:
        yield IngestError("permission denied; make the file readable to this user")
        return
    except OSError as exc:
        yield IngestError(f"cannot read: {exc.strerror or exc}")
        return

    fmt, parser = LOADERS[suffix]
    try:
        sections, title = parser(data, settings)
    except RagError as exc:
        yield exc
        return
    except Exception as exc:  # noqa: BLE001 - a third-party parser failing on odd input
        yield IngestError(f"could not parse as {fmt}: {type(exc).__name__}: {exc}")
        return
    if not sections:
        yield SkipDocument("no text found")
        return
    yield Document(
        doc_id=src.rel,
        sections=sections,
        metadata={
            "source": src.source,
            "title": title or Path(src.rel).stem,
            "mtime": stat.st_mtime,
            "sha256": hashlib.sha256(data).hexdigest(),
            "format": fmt,
        },
        size=len(data),
        origin=str(src.real),
    )

