"""Zip-based formats (.docx; .pptx, .xlsx, .epub, .odt when they come): refuse bombs before unpacking.

A 0.23 MB .docx raised the server's memory by 401 MB, so every zip-based loader opens its file
here. The declared sizes are checked first, before anything is unpacked: the part count, each
part's size and ratio, and the total and its ratio. Then each part is unpacked a megabyte at a
time to prove it holds no more than its header declares: zipfile cuts a part off at its declared
size, but `ZipFile.read` (which python-docx and the like call) first inflates up to 1 GiB in one
piece: a part that declares 4 KB and holds 1 GB took 2 GB and 8 s in python-docx. The same pass counts
the elements of the XML parts: python-docx keeps every element in memory (about 130 bytes each,
20 times the size of XML such as `<w:p/><w:p/>...`), however well or badly the file is compressed.
"""

from __future__ import annotations

import copy
import io
import struct
import zipfile

from lxml import etree

from rag.config import IngestSettings
from rag.errors import IngestError

_DIRECTORY_ENTRY = b"PK\x01\x02"  # the signature that starts each central directory entry
_CHUNK = 1 << 20
# Below this many bytes unpacked a high ratio costs nothing worth refusing a file for (python-docx's
# own styles.xml unpacks 32 times).
_RATIO_GRACE = 4 << 20
# Office, ODF and EPUB files use only these; zipfile inflates bzip2 and LZMA parts with no bound.
_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
# What a zip-based Office file is instead when it starts with this: an OLE compound file, which
# is how Office saves a password-protected one (and its legacy formats).
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_LEGACY = {".docx": ".doc", ".pptx": ".ppt", ".xlsx": ".xls", ".xlsm": ".xls"}


def _raise_it(setting: str) -> str:
    return f"if the file is genuine, raise ingest.{setting} (RAG_INGEST_{setting.upper()})"


def open_zip(data: bytes, settings: IngestSettings, kind: str) -> zipfile.ZipFile:
    """The zip in `data`, every part checked against the [ingest] limits; `kind` (".docx") names it.

    Raises IngestError naming the part, the limit and the setting to raise. A library that opens
    the same bytes again (python-docx) reads exactly the parts checked here.
    """
    if data.startswith(OLE_MAGIC):
        legacy = _LEGACY.get(kind, "Office")
        raise IngestError(f"password-protected {kind} or legacy {legacy} file; save it as a {kind} without a password")
    # zipfile builds an object per directory entry (400 bytes for 47 in the file), so count first.
    entries = data.count(_DIRECTORY_ENTRY)
    if entries > settings.max_archive_members:
        raise IngestError(f"the {kind} holds up to {entries:,} parts, over ingest.max_archive_members "
                          f"({settings.max_archive_members:,}); {_raise_it('max_archive_members')}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error) as exc:
        raise IngestError(f"corrupt or unreadable {kind}: {exc}") from None
    try:
        _check_declared(archive, len(data), settings, kind)
        _check_contents(archive, settings, kind)
    except BaseException:
        archive.close()
        raise
    return archive


def check_zip(data: bytes, settings: IngestSettings, kind: str) -> None:
    """open_zip for a library that reads the bytes itself."""
    open_zip(data, settings, kind).close()


def _check_declared(archive: zipfile.ZipFile, size: int, settings: IngestSettings, kind: str) -> None:
    """The central directory's sizes against the limits, before any part is unpacked."""
    mb = 1 << 20
    total = 0
    for info in archive.infolist():
        if info.flag_bits & 0x1:
            raise IngestError(f"part {info.filename!r} of the {kind} is encrypted; save the file without a password")
        if info.compress_type not in _METHODS:
            raise IngestError(f"part {info.filename!r} of the {kind} uses zip compression method "
                              f"{info.compress_type}; {kind} files use only deflate, so the file is corrupt or forged")
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_GRACE and ratio > settings.max_unpack_ratio:
            raise IngestError(f"part {info.filename!r} of the {kind} unpacks to {info.file_size / mb:,.0f} MB, "
                              f"{ratio:,.0f} times its packed size, over ingest.max_unpack_ratio "
                              f"({settings.max_unpack_ratio:g}): a zip bomb? {_raise_it('max_unpack_ratio')}")
    if total > settings.max_unpacked_mb * mb:
        raise IngestError(f"the {kind} unpacks to {total / mb:,.0f} MB, over ingest.max_unpacked_mb "
                          f"({settings.max_unpacked_mb:g} MB); {_raise_it('max_unpacked_mb')}")
    ratio = total / max(size, 1)
    if total > _RATIO_GRACE and ratio > settings.max_unpack_ratio:
        raise IngestError(f"the {kind} unpacks to {total / mb:,.0f} MB, {ratio:,.0f} times its own size, over "
                          f"ingest.max_unpack_ratio ({settings.max_unpack_ratio:g}): a zip bomb? "
                          f"{_raise_it('max_unpack_ratio')}")


class _TooManyElements(Exception):
    pass


class _ElementCounter:
    """lxml parser target that counts start tags and stops the parse past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.count += 1
        if self.count > self.limit:
            raise _TooManyElements

    def close(self) -> None:
        return None


def _check_contents(archive: zipfile.ZipFile, settings: IngestSettings, kind: str) -> None:
    """Unpack each part in bounded pieces: no more than declared, and XML within the element budget."""
    counter = _ElementCounter(settings.max_xml_elements)
    for info in archive.infolist():
        probe = copy.copy(info)
        probe.file_size = info.file_size + 1  # read one byte past the declared size, if there is one
        probe.CRC = None  # and say so, not "Bad CRC" (the library's own read checks the CRC)
        # The parser python-docx uses, minus the tree: entities unexpanded, 256 levels at most.
        parser: etree.XMLParser | None = etree.XMLParser(target=counter, resolve_entities=False, no_network=True)
        unpacked = 0
        try:
            with archive.open(probe) as part:
                while chunk := part.read(_CHUNK):
                    unpacked += len(chunk)
                    if unpacked > info.file_size:
                        raise IngestError(f"part {info.filename!r} of the {kind} unpacks to more than the "
                                          f"{info.file_size:,} bytes its header declares: a forged zip")
                    if parser is not None:
                        try:
                            parser.feed(chunk)
                        except etree.XMLSyntaxError:
                            parser = None  # not XML (an image), or XML the real parse will refuse
        except _TooManyElements:
            raise IngestError(f"the XML in the {kind} holds over {settings.max_xml_elements:,} elements, over "
                              f"ingest.max_xml_elements; {_raise_it('max_xml_elements')}") from None
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError, struct.error) as exc:
            raise IngestError(f"corrupt or unreadable {kind}: part {info.filename!r}: {exc}") from None
