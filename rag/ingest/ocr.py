"""OCR: the text of images and scanned pages, read offline on the CPU.

RapidOCR runs PaddleOCR's PP-OCRv4 detection and recognition models (English and Chinese) on
ONNX Runtime; its wheel carries the models, which are checked against the SHA-256 they were
released with before the first page is read. It needs nothing but `pip`, where tesseract needs
system packages. On `benchmarks/ocr_bench.py`'s pages (docs/benchmarks.md) both read clean
English at 0.15% character error rate; tesseract was faster on English and better on noisy
pages, RapidOCR better on Chinese.

Pages are read in a pool of `ingest.workers` threads (ONNX Runtime releases the GIL), each
with its own engine and its share of the CPU's cores, so a 200-page scan keeps every core busy
while the thread that asked goes on rendering the next pages.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import IngestSettings
from rag.errors import IngestError
from rag.ingest.text import normalize_whitespace
from rag.records import Section

# The models of rapidocr-onnxruntime 1.4.4, as released in its wheel.
MODEL_SHA256 = {
    "ch_PP-OCRv4_det_infer.onnx": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    "ch_PP-OCRv4_rec_infer.onnx": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
}
_VERIFIED: set[Path] = set()
_VERIFY_LOCK = threading.Lock()


@dataclass(frozen=True)
class OcrText:
    """What OCR read on one image: its lines in reading order, blank lines between paragraphs."""

    text: str
    # Mean recognition confidence of the kept lines, weighted by their length (0 when none).
    confidence: float
    lines: int
    # Lines below ingest.ocr_min_confidence, left out of `text`.
    dropped: int
    seconds: float


def ocr_section(read: OcrText, page: int | None) -> Section | None:
    """What OCR read on a page, as a section marked as OCR'd; None when it read nothing."""
    text = normalize_whitespace(read.text)
    if not text:
        return None
    return Section(text=text, page=page, metadata={"ocr": True, "ocr_confidence": round(read.confidence, 3)})


def workers(settings: IngestSettings) -> int:
    """The pool's size: ingest.workers, or one per CPU core (0)."""
    return settings.workers or max(1, os.cpu_count() or 1)


def _verified_model_dir() -> Path:
    """RapidOCR's model folder, once its files match MODEL_SHA256."""
    try:
        import rapidocr_onnxruntime
    except ImportError as exc:  # a broken install, or OpenCV's system libraries missing
        raise IngestError(f"OCR is not available ({exc}); reinstall rag (pip install -e .), and on Linux install "
                          "OpenCV's libraries (apt install libgl1 libglib2.0-0), or set ingest.ocr = \"never\"") from None
    folder = Path(rapidocr_onnxruntime.__file__).parent / "models"
    with _VERIFY_LOCK:
        if folder not in _VERIFIED:
            for name, expected in MODEL_SHA256.items():
                digest = hashlib.sha256()
                try:
                    with open(folder / name, "rb") as f:
                        while block := f.read(1 << 20):
                            digest.update(block)
                except OSError as exc:
                    raise IngestError(f"OCR model {folder / name} cannot be read ({exc.strerror}); "
                                      "reinstall rapidocr-onnxruntime") from None
                if digest.hexdigest() != expected:
                    raise IngestError(f"OCR model {folder / name} does not match its published SHA-256 "
                                      "(corrupt or replaced); reinstall rapidocr-onnxruntime==1.4.4")
            _VERIFIED.add(folder)
    return folder


# Between two words the recognizer's most likely output is often "blank" with a space at 0.01-0.2;
# inside a word the space's probability is below 0.01 (measured on rendered English pages).
SPACE_PROBABILITY = 0.01
_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_SPACE = re.compile(f"(?<=[{_CJK}]) +(?=[{_CJK}])")
# The space after a colon or comma is the one it drops most ("number:FS-2025-0419",
# "Robotics,Lisbon"): after a letter, before a letter or digit, English sets one.
_TIGHT_PUNCTUATION = re.compile(r"(?<=[A-Za-z])([:,])(?=[A-Za-z0-9])")


class _SpacedDecode:
    """RapidOCR's CTC decoder, with the spaces PP-OCRv4 drops put back.

    The Chinese-English recognizer leaves out most spaces of an English line it reads from a
    rendered page ("Scannedpageone:thecontract..."): at the gap the space is rarely the most
    likely output, but it is far likelier there than inside a word. A gap where it passes
    SPACE_PROBABILITY becomes a space; never between two Chinese characters.
    """

    def __init__(self, decode: Any) -> None:
        self.decode = decode
        self.space = len(decode.character) - 1  # RapidOCR appends " " to the model's characters
        if decode.character[self.space] != " ":
            raise IngestError("the installed RapidOCR's character list has changed; install rapidocr-onnxruntime==1.4.4")

    def __call__(self, preds: np.ndarray, return_word_box: bool = False, **kwargs: Any) -> Any:
        indices = preds.argmax(axis=2)
        gaps = (indices == 0) & (preds[:, :, self.space] >= SPACE_PROBABILITY)
        indices = np.where(gaps, self.space, indices)
        found = self.decode.decode(indices, preds.max(axis=2), return_word_box, is_remove_duplicate=True)
        return [(" ".join(_TIGHT_PUNCTUATION.sub(r"\1 ", _CJK_SPACE.sub("", text)).split()), *rest)
                for text, *rest in found]


def _engine(threads: int) -> Any:
    from rapidocr_onnxruntime import RapidOCR

    folder = _verified_model_dir()
    engine = RapidOCR(**{
        "det_model_path": str(folder / "ch_PP-OCRv4_det_infer.onnx"),
        "rec_model_path": str(folder / "ch_PP-OCRv4_rec_infer.onnx"),
        "cls_model_path": str(folder / "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
        "intra_op_num_threads": threads, "inter_op_num_threads": 1,
        # The engine's own floor is below ours: it reports what it saw, and read() decides.
        "text_score": 0.2,
        # Its 0/180-degree line classifier turned whole English lines upside down (read as "S s")
        # on clean typed pages, 3 of 8 on benchmarks/ocr_bench.py's first page; scans come upright.
        "use_cls": False,
    })
    engine.text_rec.postprocess_op = _SpacedDecode(engine.text_rec.postprocess_op)
    return engine


def _reading_order(found: list[Any]) -> list[list[tuple[float, float, float, str, float]]]:
    """RapidOCR's boxes grouped into lines (boxes whose middles lie within each other's height),
    top to bottom, each left to right: (top, bottom, left, text, confidence)."""
    boxes = []
    for points, text, confidence in found:
        ys = [p[1] for p in points]
        xs = [p[0] for p in points]
        boxes.append((min(ys), max(ys), min(xs), str(text), float(confidence)))
    boxes.sort(key=lambda b: (b[0] + b[1]) / 2)
    lines: list[list[tuple[float, float, float, str, float]]] = []
    for box in boxes:
        middle = (box[0] + box[1]) / 2
        if lines and lines[-1][0][0] <= middle <= lines[-1][0][1]:
            lines[-1].append(box)
        else:
            lines.append([box])
    for line in lines:
        line.sort(key=lambda b: b[2])
    return lines


def text_of(found: list[Any] | None, min_confidence: float) -> tuple[str, float, int, int]:
    """(text, confidence, lines kept, lines dropped) from RapidOCR's (box, text, score) results."""
    if not found:
        return "", 0.0, 0, 0
    parts: list[str] = []
    kept = dropped = 0
    weighted = chars = 0.0
    previous_bottom: float | None = None
    previous_height = 0.0
    for line in _reading_order(found):
        words = [b for b in line if b[4] >= min_confidence and b[3].strip()]
        dropped += len(line) - len(words)
        if not words:
            continue
        top = min(b[0] for b in words)
        bottom = max(b[1] for b in words)
        height = bottom - top
        if previous_bottom is not None:
            # A gap taller than a line's height ends a paragraph (the chunker splits on blank lines).
            parts.append("\n\n" if top - previous_bottom > 1.2 * max(height, previous_height) else "\n")
        parts.append(" ".join(b[3].strip() for b in words))
        for b in words:
            weighted += b[4] * len(b[3])
            chars += len(b[3])
        kept += len(words)
        previous_bottom, previous_height = bottom, height
    return "".join(parts), (weighted / chars if chars else 0.0), kept, dropped


class OcrReader:
    """Reads images in a pool of threads, each with its own engine; made per indexing run.

    `on_page(seconds)` is called from the pool after each page (the progress bar counts them).
    """

    def __init__(self, settings: IngestSettings, on_page: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self.workers = workers(settings)
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        self.on_page = on_page
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _read(self, image: np.ndarray) -> OcrText:
        started = time.perf_counter()
        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = self._local.engine = _engine(self.threads)
        found, _ = engine(image)
        text, confidence, kept, dropped = text_of(found, self.settings.ocr_min_confidence)
        seconds = time.perf_counter() - started
        if self.on_page is not None:
            self.on_page(seconds)
        return OcrText(text, confidence, kept, dropped, seconds)

    def read(self, image: np.ndarray) -> OcrText:
        """One image (H x W gray, or H x W x 3 RGB), read in the calling thread."""
        return self._read(_as_bgr(image))

    def read_many(self, images: Iterable[tuple[int, np.ndarray]]) -> Iterator[tuple[int, OcrText]]:
        """(key, text) for each (key, image), in order; at most two images per worker wait at a
        time, so the caller renders the next pages while the pool reads these."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="rag-ocr")
        pending: deque[tuple[int, Future[OcrText]]] = deque()
        try:
            for key, image in images:
                pending.append((key, self._pool.submit(self._read, _as_bgr(image))))
                while len(pending) >= 2 * self.workers:
                    first, future = pending.popleft()
                    yield first, future.result()
            while pending:
                first, future = pending.popleft()
                yield first, future.result()
        finally:
            for _, future in pending:
                future.cancel()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """OpenCV's channel order, which RapidOCR expects of an array."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, ::-1])
