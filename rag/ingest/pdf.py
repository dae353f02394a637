"""PDF: text per page through pypdf, so every chunk knows its page."""

from __future__ import annotations

import io
import logging

from rag.errors import IngestError, SkipDocument
from rag.ingest.text import normalize_whitespace
from rag.records import Section

log = logging.getLogger(__name__)

# pypdf (>= 6.21) refuses arrays and dictionaries of over 100,000 elements to guard against
# malicious files; real SEC 10-Q filings (Microsoft's 2023 Q1 and Q2) have larger ones and
# would fail whole. A higher bound still protects memory while reading such filings.
PDF_MAX_ELEMENTS = 5_000_000


def parse_pdf(data: bytes) -> tuple[list[Section], str | None]:
    from pypdf import apply_configuration

    with apply_configuration(array_maximum_element_count=PDF_MAX_ELEMENTS,
                             dictionary_maximum_element_count=PDF_MAX_ELEMENTS):
        return _parse_pdf(data)


def _parse_pdf(data: bytes) -> tuple[list[Section], str | None]:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, LimitReachedError, PdfReadError

    if not data.strip():
        raise SkipDocument("empty file")
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise IngestError("not a PDF file (no %PDF header); the file is corrupt or misnamed")
    # pypdf logs every recoverable oddity of real-world PDFs as a warning; keep them at debug.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception as exc:  # noqa: BLE001 - pypdf raises several types here
                raise IngestError(f"encrypted PDF that cannot be opened ({exc}); index a decrypted copy") from None
            if not ok:
                raise IngestError("encrypted PDF (password required); index a decrypted copy")
        sections: list[Section] = []
        for number, page in enumerate(reader.pages, start=1):
            text = normalize_whitespace(page.extract_text() or "")
            if text:
                sections.append(Section(text=text, page=number))
        title = None
        if reader.metadata is not None and reader.metadata.title:
            title = str(reader.metadata.title).strip() or None
    except (IngestError, SkipDocument):
        raise
    except LimitReachedError as exc:
        raise IngestError(f"PDF exceeds pypdf's safety limits ({exc}); it may be malformed") from None
    except FileNotDecryptedError:
        raise IngestError("encrypted PDF (password required); index a decrypted copy") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AssertionError, IndexError) as exc:
        raise IngestError(f"corrupt or unreadable PDF: {exc}") from None
    if not sections:
        raise SkipDocument("no extractable text (a scanned PDF? run OCR on it first)")
    return sections, title
