"""PDF: text per page through PDFium (pypdfium2), so every chunk knows its page.

PDFium, Chrome's PDF engine, read the SEC 10-Q filings 13-18x faster than pypdf with the same
text; PDF parsing was 62% of rag's time indexing them. It is not thread-safe, and the service
indexes uploads on several threads, so one lock serializes its use.

PDFium runs in a child process with a memory limit. It inflates each stream it reads whole, with
no limit of its own (a 1 MB PDF whose page content inflates to 1 GB took 2 GB and 18 s; to 2 GB,
3 GB), and when an allocation fails it aborts its process, which must not be the server. One child
reads this process's PDFs in turn (JSON over pipes) and is started again after a file kills it.
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
from typing import IO, Any

from rag.config import IngestSettings
from rag.errors import IngestError, SkipDocument
from rag.ingest.text import normalize_whitespace
from rag.records import Section

_PDFIUM = threading.Lock()
_MB = 1 << 20
_REQUEST = struct.Struct("<QQ")  # the PDF's size, then the memory the child may add to read it
_REPLY = struct.Struct("<Q")  # the JSON reply's size
_READY = b"R"  # the child's first byte: it has started


def parse_pdf(data: bytes, settings: IngestSettings) -> tuple[list[Section], str | None]:
    if not data.strip():
        raise SkipDocument("empty file")
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise IngestError("not a PDF file (no %PDF header); the file is corrupt or misnamed")
    # Room for what the streams inflate to, and for PDFium's copy of the file and its objects.
    budget = int(settings.max_unpacked_mb * _MB) + 2 * len(data)
    with _PDFIUM:
        reply = _WORKER.read(data, budget)
    if "error" in reply:
        raise (SkipDocument if reply["error"] == "skip" else IngestError)(reply["message"])
    if "exit" in reply:
        code = reply["exit"]
        how = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit {code}"
        raise IngestError(
            f"PDFium stopped ({how}) reading this PDF, most likely as it needed more than {budget / _MB:,.0f} MB: "
            f"streams that inflate past ingest.max_unpacked_mb ({settings.max_unpacked_mb:g} MB), a PDF bomb? "
            f"If the file is genuine, raise ingest.max_unpacked_mb (RAG_INGEST_MAX_UNPACKED_MB)")
    sections = [Section(text=text, page=page) for page, text in reply["pages"]]
    if not sections:
        raise SkipDocument("no extractable text (a scanned PDF? run OCR on it first)")
    return sections, reply["title"]


def _extract(data: bytes) -> tuple[list[tuple[int, str]], str | None]:
    """Each page's text and the title, read in this process (the child's side)."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)  # an empty user password opens owner-locked files
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise IngestError("encrypted PDF (password required); index a decrypted copy") from None
        raise IngestError(f"corrupt or unreadable PDF: {exc}") from None
    try:
        pages: list[tuple[int, str]] = []
        for number in range(1, len(document) + 1):
            page = document[number - 1]
            textpage = page.get_textpage()
            text = normalize_whitespace(textpage.get_text_bounded())
            textpage.close()
            page.close()
            if text:
                pages.append((number, text))
        title = str(document.get_metadata_dict().get("Title") or "").strip() or None
    except pdfium.PdfiumError as exc:
        raise IngestError(f"corrupt or unreadable PDF: {exc}") from None
    finally:
        document.close()
    return pages, title


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

    def read(self, data: bytes, budget: int) -> dict[str, Any]:
        """The child's reply for one PDF, or {"exit": code} if reading it killed the child."""
        process = self._process
        if process is None or process.poll() is not None or self._owner != os.getpid():
            process = self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(_REQUEST.pack(len(data), budget))
            process.stdin.write(data)
            process.stdin.flush()
            (size,) = _REPLY.unpack(_read_exactly(process.stdout, _REPLY.size))
            return json.loads(_read_exactly(process.stdout, size))
        except (OSError, EOFError, ValueError):
            self._process = None
            return {"exit": process.wait()}

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
        size, budget = _REQUEST.unpack(header)
        data = _read_exactly(requests, size)
        used = _address_space() if resource is not None else None
        if used is not None:
            limit = used + budget if hard == resource.RLIM_INFINITY else min(used + budget, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        try:
            pages, title = _extract(data)
            reply: dict[str, Any] = {"pages": pages, "title": title}
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
        del data
        body = json.dumps(reply, ensure_ascii=False).encode("utf-8")
        replies.write(_REPLY.pack(len(body)) + body)
        replies.flush()
