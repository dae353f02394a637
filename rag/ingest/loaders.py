"""Pick a parser by file extension and wrap its output with the metadata every document has.

A file may give more than one document: an e-mail is one, and each of its attachments another
(`mail.eml/offer.pdf`, with `metadata.parent`), read by the same parsers as a file on disk.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rag.config import IngestSettings
from rag.errors import IngestError, RagError, SkipDocument
from rag.ingest.discover import SourceFile
from rag.ingest.docx import parse_docx
from rag.ingest.html import parse_html
from rag.ingest.image import IMAGE_EXTENSIONS, parse_image
from rag.ingest.json_records import iter_json_records
from rag.ingest.mail import parse_eml, parse_msg
from rag.ingest.markdown import parse_markdown
from rag.ingest.ocr import OcrReader
from rag.ingest.parsed import Parsed
from rag.ingest.pdf import parse_pdf
from rag.ingest.sheets import SHEET_EXTENSIONS, parse_sheet
from rag.ingest.slides import parse_pptx
from rag.ingest.table import parse_csv
from rag.ingest.text import decode_text, normalize_whitespace
from rag.records import Document, Section

# A parser gets the file's bytes and what the run reads with: the [ingest] settings, whose limits
# bound what it may unpack, and the OCR reader.
Parser = Callable[[bytes, "ReadContext"], "Parsed | tuple[list[Section], str | None]"]
# Attachments inside attachments are read this deep (an e-mail forwarded as an attachment).
MAX_ATTACHMENT_DEPTH = 3


@dataclass
class ReadContext:
    """What every parser of one run shares."""

    settings: IngestSettings
    ocr: OcrReader


def parse_plain_text(data: bytes) -> tuple[list[Section], str | None]:
    text = normalize_whitespace(decode_text(data))
    return ([Section(text=text)] if text else []), None


def _bytes_only(parse: Callable[[bytes], Any]) -> Parser:
    """A parser that needs no settings, called like those that do."""
    return lambda data, context: parse(data)


def _settings_only(parse: Callable[[bytes, IngestSettings], Any]) -> Parser:
    return lambda data, context: parse(data, context.settings)


LOADERS: dict[str, tuple[str, Parser]] = {
    ".txt": ("text", _bytes_only(parse_plain_text)),
    ".text": ("text", _bytes_only(parse_plain_text)),
    ".md": ("markdown", _bytes_only(parse_markdown)),
    ".markdown": ("markdown", _bytes_only(parse_markdown)),
    ".html": ("html", _settings_only(parse_html)),
    ".htm": ("html", _settings_only(parse_html)),
    ".pdf": ("pdf", lambda data, context: parse_pdf(data, context.settings, context.ocr)),
    ".docx": ("docx", _settings_only(parse_docx)),
    ".pptx": ("pptx", _settings_only(parse_pptx)),
    ".csv": ("csv", _bytes_only(parse_csv)),
    **{ext: ("spreadsheet", _settings_only(lambda data, settings, ext=ext: parse_sheet(data, settings, ext)))
       for ext in SHEET_EXTENSIONS},
    ".eml": ("email", _settings_only(parse_eml)),
    ".msg": ("email", _settings_only(parse_msg)),
    **{ext: ("image", lambda data, context: parse_image(data, context.settings, context.ocr))
       for ext in IMAGE_EXTENSIONS},
}
RECORD_EXTENSIONS = (".json", ".jsonl")
# Formats whose documents hold others (attachments): always read, to know what they hold.
_CONTAINERS = frozenset({"email"})
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]+")


def supported_extensions() -> list[str]:
    return sorted([*LOADERS, *RECORD_EXTENSIONS])


def load_source(src: SourceFile, settings: IngestSettings) -> Iterator[Document | RagError]:
    """Documents of one file, or errors that say why (a JSONL file or an e-mail may yield several)."""
    reader = FileReader(settings)
    try:
        yield from reader.read(src)
    finally:
        reader.close()


@dataclass
class FileReader:
    """Reads files for one run. `holds(doc_id, sha256)` says whether the index already holds a
    document with exactly that content: such a file is not parsed again (a scanned PDF is not
    read by OCR on every run), only named, so that the run sees it unchanged."""

    settings: IngestSettings
    on_ocr_page: Callable[[float], None] | None = None
    holds: Callable[[str, str], bool] | None = None
    _context: ReadContext | None = field(default=None, init=False, repr=False)

    @property
    def context(self) -> ReadContext:
        if self._context is None:
            self._context = ReadContext(self.settings, OcrReader(self.settings, self.on_ocr_page))
        return self._context

    def close(self) -> None:
        if self._context is not None:
            self._context.ocr.close()

    def read(self, src: SourceFile) -> Iterator[Document | RagError]:
        """Documents of one file, or errors that say why."""
        suffix = src.path.suffix.lower()
        if suffix not in LOADERS and suffix not in RECORD_EXTENSIONS:
            yield SkipDocument(f"unsupported file type '{suffix or src.path.name}' "
                               f"(supported: {' '.join(supported_extensions())})")
            return
        settings = self.settings
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
        yield from self._documents(data, suffix, src.rel, {"source": src.source, "mtime": stat.st_mtime},
                                   str(src.real), None, 0)

    def _documents(self, data: bytes, suffix: str, doc_id: str, base: dict[str, Any], origin: str,
                   where: str | None, depth: int) -> Iterator[Document | RagError]:
        """The document of `data` (and those of its attachments); `where` names an attachment."""
        fmt, parser = LOADERS[suffix]
        sha = hashlib.sha256(data).hexdigest()
        metadata = {**base, "title": PurePosixPath(doc_id).stem, "sha256": sha, "format": fmt}
        if self.holds is not None and fmt not in _CONTAINERS and self.holds(doc_id, sha):
            yield Document(doc_id=doc_id, sections=[], metadata=metadata, size=len(data), origin=origin)
            return
        try:
            parsed = parser(data, self.context)
        except RagError as exc:
            yield _placed(exc, where)
            return
        except Exception as exc:  # noqa: BLE001 - a third-party parser failing on odd input
            yield IngestError(f"could not parse as {fmt}: {type(exc).__name__}: {exc}", where)
            return
        if isinstance(parsed, tuple):
            parsed = Parsed(*parsed)
        if parsed.sections:
            yield Document(doc_id=doc_id, sections=parsed.sections,
                           metadata={**metadata, **parsed.metadata, "title": parsed.title or metadata["title"]},
                           size=len(data), origin=origin, ocr_seconds=parsed.ocr_seconds)
        elif not parsed.attachments:
            yield SkipDocument("no text found", where)
        yield from self._attachments(parsed, doc_id, base, origin, where, depth)

    def _attachments(self, parsed: Parsed, doc_id: str, base: dict[str, Any], origin: str, where: str | None,
                     depth: int) -> Iterator[Document | RagError]:
        taken: set[str] = set()
        for name, blob in parsed.attachments:
            name = _unique(_UNSAFE_NAME.sub("_", name).strip()[:200] or "attachment", taken)
            child = f"{doc_id}/{name}"
            named = f"{where or doc_id}/{name}"
            suffix = PurePosixPath(name).suffix.lower()
            if depth + 1 > MAX_ATTACHMENT_DEPTH:
                yield SkipDocument(f"an attachment nested over {MAX_ATTACHMENT_DEPTH} levels deep", named)
            elif suffix not in LOADERS:
                yield SkipDocument(f"attachment of unsupported type '{suffix or name}'", named)
            elif not blob:
                yield SkipDocument("empty attachment", named)
            else:
                yield from self._documents(blob, suffix, child, {**base, "parent": doc_id}, origin, named, depth + 1)


def _placed(error: RagError, where: str | None) -> RagError:
    """The error, narrowed to the attachment it is about."""
    if where is None or getattr(error, "where", None):
        return error
    return type(error)(getattr(error, "reason", str(error)), where) if isinstance(error, (IngestError, SkipDocument)) \
        else IngestError(str(error), where)


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or "name (2).pdf" when an earlier attachment had it."""
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        path = Path(name)
        candidate = f"{path.stem} ({number}){path.suffix}"
    taken.add(candidate)
    return candidate
