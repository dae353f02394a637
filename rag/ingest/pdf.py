"""PDF: text per page through PDFium (pypdfium2), so every chunk knows its page; pages with no
text layer (a scan) rendered by PDFium and read by OCR (ocr.py), with `ingest.ocr`.

PDFium, Chrome's PDF engine, read the SEC 10-Q filings 13-18x faster than pypdf with the same
text; PDF parsing was 62% of rag's time indexing them. It is not thread-safe, and the service
indexes uploads on several threads, so one lock serializes its use.

PDFium runs in a child process with a memory limit. It inflates each stream it reads whole, with
no limit of its own (a 1 MB PDF whose page content inflates to 1 GB took 2 GB and 18 s; to 2 GB,
3 GB), and when an allocation fails it aborts its process, which must not be the server. One child
reads this process's PDFs in turn (JSON over pipes) and is started again after a file kills it.
It renders the pages OCR reads too, a few at a time (gray pixels over the pipe), so that the
lock is held while it renders and released while the pool reads them.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from rag.config import IngestSettings
from rag.errors import IngestError, SkipDocument
from rag.ingest.ocr import OcrReader, ocr_section
from rag.ingest.parsed import Parsed
from rag.ingest.text import normalize_whitespace
from rag.records import Section

_PDFIUM = threading.Lock()
_MB = 1 << 20
# What to do (_TEXT or _RENDER), whether every page is for OCR, the request's size, the memory
# the child may add.
_REQUEST = struct.Struct("<BBQQ")
_REPLY = struct.Struct("<Q")  # the size of the JSON reply, and of each rendered page after it
_READY = b"R"  # the child's first byte: it has started
_TEXT, _RENDER = 0, 1
# In "auto", a page whose text layer holds fewer non-space characters than this, over an image
# that covers half the page or more, is a scan with stray characters (a stamp's, a page number).
STRAY_CHARACTERS = 40
_MAX_SIDE = 2000  # RapidOCR reads at most this many pixels on the long side


def parse_pdf(data: bytes, settings: IngestSettings, ocr: OcrReader) -> Parsed:
    if not data.strip():
        raise SkipDocument("empty file")
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise IngestError("not a PDF file (no %PDF header); the file is corrupt or misnamed")
    # Room for what the streams inflate to, and for PDFium's copy of the file and its objects.
    budget = int(settings.max_unpacked_mb * _MB) + 2 * len(data)
    with _PDFIUM:
        reply = _WORKER.ask(_TEXT, settings.ocr == "always", data, budget)
    _raise_for(reply, settings, budget)
    sections = {number: Section(text=text, page=number) for number, text in reply["pages"]}
    # The pages that need OCR are found whatever ingest.ocr says, so that "never" can say what it left.
    scans: list[int] = reply["ocr"]
    read = scans if settings.ocr != "never" else []
    seconds = 0.0
    for number, found in ocr.read_many(_rendered(data, read, settings, budget, ocr.workers)) if read else ():
        seconds += found.seconds
        section = ocr_section(found, number)
        if section is not None:  # else the stray characters of its text layer, if any, stand
            sections[number] = section
    if not sections:
        if scans and not read:
            raise SkipDocument('no text layer (a scanned PDF), and OCR is off (ingest.ocr = "never"); set it to '
                               '"auto" to read it')
        raise SkipDocument("no text found, by PDFium or by OCR" if read else
                           "no extractable text: its pages hold no text layer, and no images for OCR to read")
    metadata = {"ocr_pages": len(read)} if read else {}
    return Parsed([sections[n] for n in sorted(sections)], reply["title"], metadata, ocr_seconds=seconds)


def _raise_for(reply: dict[str, Any], settings: IngestSettings, budget: int) -> None:
    if "error" in reply:
        raise (SkipDocument if reply["error"] == "skip" else IngestError)(reply["message"])
    if "exit" in reply:
        code = reply["exit"]
        how = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit {code}"
        raise IngestError(
            f"PDFium stopped ({how}) reading this PDF, most likely as it needed more than {budget / _MB:,.0f} MB: "
            f"streams that inflate past ingest.max_unpacked_mb ({settings.max_unpacked_mb:g} MB), a PDF bomb? "
            f"If the file is genuine, raise ingest.max_unpacked_mb (RAG_INGEST_MAX_UNPACKED_MB)")


def _rendered(data: bytes, pages: list[int], settings: IngestSettings, budget: int,
              workers: int) -> Iterator[tuple[int, np.ndarray]]:
    """The pages, rendered gray a few at a time: the lock is held only while PDFium renders."""
    step = max(2, 2 * workers)
    for start in range(0, len(pages), step):
        batch = pages[start:start + step]
        request = json.dumps({"pages": batch, "dpi": settings.ocr_dpi}).encode()
        with _PDFIUM:
            reply = _WORKER.ask(_RENDER, False, struct.pack("<I", len(request)) + request + data, budget)
            _raise_for(reply, settings, budget)
            images = [(page["page"], _WORKER.pixels(page["height"], page["width"])) for page in reply["images"]]
        yield from images


def _open(data: bytes) -> Any:
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data)  # an empty user password opens owner-locked files
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise IngestError("encrypted PDF (password required); index a decrypted copy") from None
        raise IngestError(f"corrupt or unreadable PDF: {exc}") from None


def _image_cover(page: Any) -> float:
    """The share of the page its images cover (their bounding boxes, overlaps counted twice)."""
    import pypdfium2.raw as pdfium_c

    width, height = page.get_size()
    covered = 0.0
    for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3):
        left, bottom, right, top = image.get_bounds()
        covered += max(0.0, min(right, width) - max(left, 0.0)) * max(0.0, min(top, height) - max(bottom, 0.0))
    return covered / max(width * height, 1.0)


def needs_ocr(text: str, image_cover: float) -> bool:
    """A page with no text over an image, or only stray characters over one that fills half the
    page: a scan, for OCR to read."""
    characters = len("".join(text.split()))
    if characters == 0:
        return image_cover >= 0.05  # a scan; not a blank page, nor one with a small logo alone
    return characters < STRAY_CHARACTERS and image_cover >= 0.5


def _extract(data: bytes, every_page: bool) -> tuple[list[tuple[int, str]], str | None, list[int]]:
    """Each page's text, the title and the pages OCR should read (`every_page`: all of them), in
    this process (the child's side)."""
    import pypdfium2 as pdfium

    document = _open(data)
    try:
        pages: list[tuple[int, str]] = []
        scans: list[int] = []
        for number in range(1, len(document) + 1):
            page = document[number - 1]
            textpage = page.get_textpage()
            text = normalize_whitespace(textpage.get_text_bounded())
            textpage.close()
            if every_page or needs_ocr(text, _image_cover(page)):
                scans.append(number)
            page.close()
            if text:
                pages.append((number, text))
        title = str(document.get_metadata_dict().get("Title") or "").strip() or None
    except pdfium.PdfiumError as exc:
        raise IngestError(f"corrupt or unreadable PDF: {exc}") from None
    finally:
        document.close()
    return pages, title, scans


def _render(data: bytes, pages: list[int], dpi: int) -> list[tuple[int, np.ndarray]]:
    """The pages as 8-bit gray pixels, at `dpi` or less (the long side at most _MAX_SIDE)."""
    import pypdfium2 as pdfium

    document = _open(data)
    try:
        rendered = []
        for number in pages:
            page = document[number - 1]
            width, height = page.get_size()
            scale = min(dpi / 72, _MAX_SIDE / max(width, height, 1.0))
            bitmap = page.render(scale=scale, grayscale=True)
            rendered.append((number, np.ascontiguousarray(bitmap.to_numpy()).reshape(bitmap.height, bitmap.width)))
            page.close()
    except pdfium.PdfiumError as exc:
        raise IngestError(f"cannot render page {number} for OCR: {exc}") from None
    finally:
        document.close()
    return rendered


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


class _Worker:
    """The child process that runs PDFium, started on first use and again after it dies."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._owner = 0  # the pid that started it: a forked copy of this process starts its own

    def ask(self, kind: int, every_page: bool, payload: bytes, budget: int) -> dict[str, Any]:
        """The child's reply to one request, or {"exit": code} if it killed the child. A render's
        pages follow the reply: read each with `pixels`, under the same lock."""
        process = self._process
        if process is None or process.poll() is not None or self._owner != os.getpid():
            process = self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(_REQUEST.pack(kind, every_page, len(payload), budget))
            process.stdin.write(payload)
            process.stdin.flush()
            (size,) = _REPLY.unpack(_read_exactly(process.stdout, _REPLY.size))
            return json.loads(_read_exactly(process.stdout, size))
        except (OSError, EOFError, ValueError):
            self._process = None
            return {"exit": process.wait()}

    def pixels(self, height: int, width: int) -> np.ndarray:
        """One rendered page of the last reply."""
        assert self._process is not None and self._process.stdout is not None
        (size,) = _REPLY.unpack(_read_exactly(self._process.stdout, _REPLY.size))
        if size != height * width:
            raise IngestError("the process that reads PDFs sent a page of the wrong size; run again")
        return np.frombuffer(_read_exactly(self._process.stdout, size), dtype=np.uint8).reshape(height, width)

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the folder that holds the rag package
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        process = subprocess.Popen([sys.executable, "-c", "from rag.ingest.pdf import serve; serve()"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert process.stdout is not None
        if process.stdout.read(1) != _READY:
            raise IngestError(f"cannot start the process that reads PDFs ({sys.executable}: exit {process.wait()}); "
                              f"its error is in this process's standard error")
        self._process, self._owner = process, os.getpid()
        return process

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and self._owner == os.getpid():
            assert process.stdin is not None
            process.stdin.close()  # the child ends at the end of its input
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


_WORKER = _Worker()
atexit.register(_WORKER.stop)


def _address_space() -> int | None:
    """This process's virtual memory in bytes (Linux), which RLIMIT_AS limits."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def serve() -> None:
    """The child's loop: a PDF in on stdin, its pages as JSON out on stdout, until stdin closes.

    Where there is no RLIMIT_AS (Windows) or no /proc (macOS) it reads without a memory limit, and
    still keeps a PDF that kills PDFium from killing the indexing process.
    """
    import pypdfium2  # noqa: F401 - loaded before the memory is measured

    try:
        import resource
    except ImportError:
        resource = None  # type: ignore[assignment]
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the replies
    hard = resource.getrlimit(resource.RLIMIT_AS)[1] if resource is not None else None
    replies.write(_READY)
    replies.flush()
    while header := requests.read(_REQUEST.size):
        kind, every_page, size, budget = _REQUEST.unpack(header)
        payload = _read_exactly(requests, size)
        used = _address_space() if resource is not None else None
        if used is not None:
            limit = used + budget if hard == resource.RLIM_INFINITY else min(used + budget, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        frames: list[bytes] = []
        try:
            if kind == _RENDER:
                (length,) = struct.unpack("<I", payload[:4])
                asked = json.loads(payload[4:4 + length])
                rendered = _render(payload[4 + length:], asked["pages"], asked["dpi"])
                reply: dict[str, Any] = {"images": [{"page": n, "height": int(a.shape[0]), "width": int(a.shape[1])}
                                                    for n, a in rendered]}
                frames = [a.tobytes() for _, a in rendered]
                del rendered
            else:
                pages, title, scans = _extract(payload, bool(every_page))
                reply = {"pages": pages, "title": title, "ocr": scans}
        except SkipDocument as exc:
            reply = {"error": "skip", "message": exc.reason}
        except IngestError as exc:
            reply = {"error": "ingest", "message": exc.reason}
        except MemoryError:
            reply = {"error": "ingest", "message": f"reading this PDF needs more than {budget / _MB:,.0f} MB; if "
                     f"the file is genuine, raise ingest.max_unpacked_mb (RAG_INGEST_MAX_UNPACKED_MB)"}
        except Exception as exc:  # noqa: BLE001 - PDFium failing on odd input, as load_source words it
            reply = {"error": "ingest", "message": f"could not parse as pdf: {type(exc).__name__}: {exc}"}
        finally:
            if used is not None:
                resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        del payload
        body = json.dumps(reply, ensure_ascii=False).encode("utf-8")
        replies.write(_REPLY.pack(len(body)) + body)
        for frame in frames if "images" in reply else ():
            replies.write(_REPLY.pack(len(frame)))
            replies.write(frame)
        replies.flush()
