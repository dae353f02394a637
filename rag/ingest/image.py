"""Images (.png, .jpg, .tif, .bmp, .webp): their text, read by OCR.

Pillow reads the image's size from its header before decoding anything, so a small file that
decodes to gigapixels is refused by ingest.max_unpacked_mb instead of filling memory. A TIFF of
several pages gives a section per page, each page's location "page N".
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from rag.config import IngestSettings
from rag.errors import IngestError, SkipDocument
from rag.ingest.ocr import OcrReader, ocr_section
from rag.ingest.parsed import Parsed
from rag.records import Section

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_FORMATS = {"PNG", "JPEG", "MPO", "TIFF", "BMP", "DIB", "WEBP"}


def _open(data: bytes, settings: IngestSettings) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    """The image's page count, and its pages decoded one at a time as OCR asks for them."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise IngestError("not an image Pillow can identify (truncated, or another kind of file with an image's "
                          "name)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise IngestError(f"{exc}; an image bomb? If the file is genuine, raise ingest.max_unpacked_mb") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise IngestError(f"not an image Pillow can read ({type(exc).__name__}: {exc}); the file is corrupt or "
                          "misnamed") from None
    if image.format not in _FORMATS:
        raise IngestError(f"a {image.format} image, not one of the formats rag reads by OCR (PNG, JPEG, TIFF, BMP, "
                          "WebP); convert it to PNG")
    count = getattr(image, "n_frames", 1)
    if count > settings.max_archive_members:
        raise IngestError(f"the image holds {count:,} pages, over ingest.max_archive_members "
                          f"({settings.max_archive_members:,}); if the file is genuine, raise it")
    return count, _decoded(image, count, settings)


def _decoded(image: Any, count: int, settings: IngestSettings) -> Iterator[tuple[int, np.ndarray]]:
    from PIL import ImageOps

    for number in range(count):
        try:
            image.seek(number)
            width, height = image.size
            # Decoded as 8-bit gray or RGB: 3 bytes a pixel at most, and the copy OCR makes.
            if width * height * 3 > settings.max_unpacked_mb * (1 << 20):
                raise IngestError(f"the image is {width:,} x {height:,} pixels: decoded, over ingest.max_unpacked_mb "
                                  f"({settings.max_unpacked_mb:g} MB), an image bomb? If the file is genuine, raise "
                                  "ingest.max_unpacked_mb (RAG_INGEST_MAX_UNPACKED_MB)")
            frame = ImageOps.exif_transpose(image) if number == 0 else image.copy()
            frame = frame.convert("L") if frame.mode in ("1", "L", "I;16", "I", "F") else frame.convert("RGB")
            yield number + 1, np.asarray(frame)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise IngestError(f"cannot decode page {number + 1} of the image ({type(exc).__name__}: {exc}); the "
                              "file is corrupt or truncated") from None


def parse_image(data: bytes, settings: IngestSettings, ocr: OcrReader) -> Parsed:
    if settings.ocr == "never":
        raise SkipDocument('an image, and OCR is off (ingest.ocr = "never"); set it to "auto" to index its text')
    count, frames = _open(data, settings)
    several = count > 1
    sections: list[Section] = []
    seconds = 0.0
    for number, read in ocr.read_many(frames):
        seconds += read.seconds
        section = ocr_section(read, number if several else None)
        if section is not None:
            sections.append(section)
    if not sections:
        raise SkipDocument("OCR found no text in the image")
    return Parsed(sections, metadata={"ocr_pages": count}, ocr_seconds=seconds)
