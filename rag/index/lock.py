"""The one writer's lock on an index folder, and the cleanup of what killed writers left."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

from rag.errors import IndexLockedError
from rag.index.folder import CURRENT_FILE, LOCK_FILE, VERSION_NAME, IndexFolder, disk_error, not_a_folder
from rag.index.segments import SEGMENT_NAME

log = logging.getLogger(__name__)


class WriteLock:
    """flock() on <index>/LOCK, holding the writer's process id. A first write that fails to take
    it leaves no empty folder or LOCK behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        path = self.path
        problem = not_a_folder(path)
        if problem is not None:
            raise problem
        created = [p for p in (path, *path.parents) if not p.exists()]
        has_previous = (path / CURRENT_FILE).exists()
        had_lock_file = (path / LOCK_FILE).exists()
        fd: int | None = None
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                raise IndexLockedError(f"index {path} is being written by another process (pid {holder}); "
                                       "wait for it to finish, or stop it") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except (OSError, IndexLockedError) as exc:
            if fd is not None:
                os.close(fd)
            if isinstance(exc, IndexLockedError):
                raise
            if not has_previous:
                if not had_lock_file and path.is_dir():
                    (path / LOCK_FILE).unlink(missing_ok=True)
                for folder in created:
                    try:
                        folder.rmdir()
                    except OSError:
                        break
            raise disk_error(exc, path, has_previous) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def remove_leftovers(folder: IndexFolder, current: str | None) -> None:
    """Staging folders, uncommitted versions and segments no version names, left by a writer that
    was killed (the lock holder is the only writer, so nothing of them is in use)."""
    current_number = int(current[1:]) if current else 0
    for entry in folder.path.iterdir():
        match = VERSION_NAME.match(entry.name)
        if entry.name.startswith(".staging-") or (match and int(match.group(1)) > current_number):
            log.info("removing %s left by an interrupted write", entry)
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name == CURRENT_FILE + ".tmp":
            entry.unlink(missing_ok=True)
    remove_unnamed_segments(folder)


def remove_unnamed_segments(folder: IndexFolder) -> None:
    root = folder.segments_root
    if not root.is_dir():
        return
    named = folder.referenced_segments()
    for entry in root.iterdir():
        if entry.name.startswith(".staging-") or (SEGMENT_NAME.match(entry.name) and entry.name not in named):
            log.info("removing segment %s, which no version names", entry.name)
            shutil.rmtree(entry, ignore_errors=True)
