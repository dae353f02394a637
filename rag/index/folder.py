"""The index folder: its versions, the CURRENT pointer, its segments, what its writes leave.

    <index>/CURRENT          names the live version, e.g. "v000007"
    <index>/LOCK             flock()ed by the one writer; holds its process id
    <index>/v000007/         manifest.json: the version's segments (with their files' checksums),
                             settings and counts (never modified)
    <index>/segments/        the segments versions are made of (rag.index.segments)
    <index>/.staging-*/      a version being written; deleted if its writer died
"""

from __future__ import annotations

import errno
import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from rag.config import IndexSettings
from rag.errors import IndexCorruptError, RagError
from rag.index.manifest import Manifest, SegmentRecord
from rag.index.segments import SEGMENTS_DIR, Segment
from rag.index.faisslib import gpu_count

CURRENT_FILE = "CURRENT"
LOCK_FILE = "LOCK"
VERSION_NAME = re.compile(r"^v(\d{6,})$")


def version_name(number: int) -> str:
    return f"v{number:06d}"


# What FAISS (RuntimeError), SQLite and the OS raise when storage gives out.
STORAGE_ERRORS = (OSError, sqlite3.Error, RuntimeError)


def disk_error(exc: BaseException, path: Path, has_previous: bool = True) -> RagError:
    text = str(exc)
    code = getattr(exc, "errno", None)
    unchanged = "the previous version is intact" if has_previous else "no index was created"
    if code == errno.ENOSPC or "No space left" in text or "disk is full" in text:
        return RagError(f"disk full while writing the index at {path}; {unchanged}. "
                        "Free some space and run again.")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "readonly" in text or "Read-only" in text:
        reason = getattr(exc, "strerror", None) or text
        return RagError(f"cannot write the index at {path} ({reason}); {unchanged}. "
                        "Check the folder's permissions or choose another --index.")
    return RagError(f"writing the index at {path} failed ({text.strip().splitlines()[-1] if text.strip() else exc!r}); "
                    f"{unchanged}")


def not_a_folder(path: Path) -> RagError | None:
    """An index path that is (or lies under) a file: say so, rather than an OS error later."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if candidate.is_dir():
                return None
            which = "is a file" if candidate == path else f"lies under {candidate}, which is a file"
            return RagError(f"--index {path} {which}, not an index folder; name a folder (it is created "
                            "when missing), e.g. --index indexes/company")
    return None


class IndexFolder:
    """One index folder: what is in it and which version is live (rag.index.store opens them)."""

    def __init__(self, path: Path, settings: IndexSettings) -> None:
        self.path = Path(path)
        self.settings = settings
        # Segments opened by this store's readers, kept for the next version's reader: after a
        # write, a server then loads only the new segment, not every segment's vectors again.
        self._open_segments: dict[tuple[str, str], Segment] = {}
        self._segments_lock = threading.Lock()

    def open_segment(self, record: SegmentRecord, tokenizer_settings: dict[str, Any]) -> Segment:
        """A committed segment, opened once per store. Keyed by its files' checksums too: a name
        comes back when an index folder is rebuilt from scratch."""
        key = (record.name, json.dumps(record.files, sort_keys=True))
        with self._segments_lock:
            segment = self._open_segments.get(key)
        if segment is None:
            segment = Segment.open(self.segments_root / record.name, record, self.settings.factory, self.use_gpu(),
                                   tokenizer_settings, self.settings.shards)
            with self._segments_lock:
                segment = self._open_segments.setdefault(key, segment)
        return segment

    def forget_segments_but(self, names: set[str]) -> None:
        """Drop cached segments the newest reader does not use (older readers keep their own)."""
        with self._segments_lock:
            for key in [k for k in self._open_segments if k[0] not in names]:
                del self._open_segments[key]

    @property
    def segments_root(self) -> Path:
        return self.path / SEGMENTS_DIR

    def use_gpu(self) -> bool:
        return self.settings.device == "auto" and gpu_count() > 0

    def current_version(self) -> str | None:
        try:
            name = (self.path / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except NotADirectoryError:  # checked only when reading fails: this runs on every search
            raise not_a_folder(self.path) or IndexCorruptError(f"{self.path} is not a folder") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise IndexCorruptError(f"{self.path / CURRENT_FILE} cannot be read ({exc}); run `rag check`, or "
                                    "rebuild the index") from None
        if not VERSION_NAME.match(name):
            raise IndexCorruptError(f"{self.path / CURRENT_FILE} holds {name!r}, not a version name; rebuild the index")
        return name

    def exists(self) -> bool:
        return self.current_version() is not None

    def versions(self) -> list[str]:
        if not self.path.is_dir():
            return []
        names = [p.name for p in self.path.iterdir() if p.is_dir() and VERSION_NAME.match(p.name)]
        return sorted(names, key=lambda name: int(name[1:]))

    def version_files(self, name: str) -> dict[str, tuple[Path, dict[str, Any] | None]]:
        """Every file the version is made of, by its name in `rag check`'s messages, with the
        size and checksum its manifest records."""
        directory = self.path / name
        manifest = Manifest.read(directory)
        files: dict[str, tuple[Path, dict[str, Any] | None]] = {
            f: (directory / f, digest) for f, digest in manifest.files.items()}
        for part in manifest.parts():
            for f, digest in part.files.items():
                files[f"{part.name}/{f}"] = (self.segments_root / part.name / f, digest)
        return files

    def disk_bytes(self) -> int:
        name = self.current_version()
        if name is None:
            return 0
        own = sum(p.stat().st_size for p in (self.path / name).iterdir() if p.is_file())
        return own + sum(p.stat().st_size for f, (p, _) in self.version_files(name).items() if "/" in f and p.is_file())

    def referenced_segments(self) -> set[str]:
        """Segments (and training templates) some version on disk names."""
        names: set[str] = set()
        for version in self.versions():
            try:
                manifest = Manifest.read(self.path / version)
            except RagError:
                continue
            names.update(part.name for part in manifest.parts())
        return names
