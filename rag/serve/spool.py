"""Where uploaded files wait to be indexed: one folder per upload, in a spool of bounded size.

Each folder is named after the server process that made it (pid and start time), so a process
that starts removes what killed processes left behind, and never what a live one is still
indexing. The spool is on this machine (the system's temporary folder unless serve.upload_dir
says otherwise); every process using it counts towards serve.upload_spool_mb.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO

from rag.errors import RagError
from rag.serve.job_log import process_alive, process_started

log = logging.getLogger(__name__)

_COPY_BLOCK = 1 << 20


class SpoolFull(RagError):
    """No room for an upload now; room comes back as queued uploads are indexed."""


def default_spool_dir() -> Path:
    # Per user: a folder another user made first would not be ours to write.
    return Path(tempfile.gettempdir()) / f"rag-uploads-{os.getuid()}"


class UploadSpool:
    def __init__(self, folder: Path | None, limit_bytes: int) -> None:
        self.folder = Path(folder) if folder else default_spool_dir()
        self.limit_bytes = limit_bytes
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise RagError(f"cannot make the upload folder {self.folder} ({exc.strerror or exc}); set "
                           "serve.upload_dir to a folder this user may write") from None
        self._prefix = f"{os.getpid()}.{process_started(os.getpid())}."
        self.removed_leftovers = self._remove_leftovers()

    def _remove_leftovers(self) -> int:
        """Remove the folders of processes that are gone (killed mid-upload); returns how many."""
        removed = 0
        for entry in self.folder.iterdir():
            pid, started, _ = (entry.name.split(".", 2) + ["", ""])[:3]
            if not entry.is_dir() or not pid.isdigit():
                continue
            if process_alive(int(pid), int(started) if started.isdigit() else None):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        if removed:
            log.info("removed %d upload folders left by stopped server processes in %s", removed, self.folder)
        return removed

    def new_folder(self) -> Path:
        """A private folder for one upload (removed when its job ends, or by the next server start
        if this process is killed first)."""
        folder = self.folder / (self._prefix + uuid.uuid4().hex)
        folder.mkdir(mode=0o700)
        return folder

    def used_bytes(self) -> int:
        """What every folder of the spool holds now, all processes' together."""
        total = 0
        for root, _, files in os.walk(self.folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass  # removed meanwhile by its job
        return total

    def check_room(self, incoming: int) -> None:
        """SpoolFull unless `incoming` more bytes fit under the limit."""
        used = self.used_bytes()
        if used + incoming > self.limit_bytes:
            raise self._full(used)

    def _full(self, used: int) -> SpoolFull:
        return SpoolFull(f"uploads waiting to be indexed already take {used / 2**20:.0f} MB of "
                         f"serve.upload_spool_mb ({self.limit_bytes / 2**20:g} MB); retry when they are indexed")

    def copy_in(self, source: BinaryIO, target: Path) -> int:
        """Copy an uploaded file into a spool folder, stopping with SpoolFull (the partial file
        removed) as soon as the spool would pass its limit; returns the bytes written."""
        budget = self.limit_bytes - self.used_bytes()
        written = 0
        try:
            with target.open("wb") as out:
                while block := source.read(_COPY_BLOCK):
                    written += len(block)
                    if written > budget:
                        raise self._full(self.limit_bytes - budget)
                    out.write(block)
        except OSError as exc:
            target.unlink(missing_ok=True)
            raise RagError(f"cannot store the upload ({exc.strerror or exc}); the server's disk may be full: "
                           "retry later") from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return written
