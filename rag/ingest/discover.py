"""Find the files to index under the paths a user names, honouring ignore patterns."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rag.config import IngestSettings


@dataclass(frozen=True)
class SourceFile:
    """A file to index; `rel` (posix, relative to the named folder) is its document id."""

    path: Path
    rel: str


def _read_patterns(path: Path) -> list[str]:
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _ignored(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    name = PurePosixPath(rel).name
    for pattern in patterns:
        if pattern.endswith("/"):
            if not is_dir:
                continue
            pattern = pattern.rstrip("/")
        pattern = pattern.lstrip("/")
        if fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def discover(paths: list[Path], settings: IngestSettings) -> tuple[list[SourceFile], list[tuple[str, str]]]:
    """Files under `paths` in a stable order, and (path, reason) for paths that do not exist.

    Hidden files and folders are left out, as are matches of `ingest.exclude` and of the
    patterns in each named folder's ignore file (`.ragignore`).
    """
    found: list[SourceFile] = []
    missing: list[tuple[str, str]] = []
    for root in paths:
        if root.is_file():
            found.append(SourceFile(root, root.name))
            continue
        if not root.is_dir():
            missing.append((str(root), "no such file or folder"))
            continue
        patterns = list(settings.exclude) + _read_patterns(root / settings.ignore_file)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            base = Path(dirpath)
            rel_dir = base.relative_to(root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and not _ignored(rel_dir + d, True, patterns)
            )
            for name in sorted(filenames):
                rel = rel_dir + name
                if name.startswith(".") or _ignored(rel, False, patterns):
                    continue
                found.append(SourceFile(base / name, rel))
    return found, missing
