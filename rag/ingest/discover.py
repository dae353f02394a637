"""Find the files to index under the paths a user names, honouring ignore patterns and the
symbolic-link policy (nothing outside an indexed folder is read unless the user says so)."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rag.config import IngestSettings


@dataclass(frozen=True)
class SourceFile:
    """A file to index; `rel` (posix, relative to the named folder) is its document id, `real`
    (links resolved) is where its text comes from."""

    path: Path
    rel: str
    real: Path = None  # type: ignore[assignment]  # resolved from path when not given

    def __post_init__(self) -> None:
        if self.real is None:
            object.__setattr__(self, "real", Path(os.path.realpath(self.path)))

    @property
    def source(self) -> str:
        """The path shown to people: as found, or the link's target when a link was followed."""
        return str(self.path) if os.path.abspath(self.path) == str(self.real) else str(self.real)


@dataclass
class Discovery:
    files: list[SourceFile] = field(default_factory=list)
    # (path, reason): named paths that do not exist.
    missing: list[tuple[str, str]] = field(default_factory=list)
    # (path, reason): links not followed, folders that cannot be listed.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # The real folders (and files) named, which bound what `--sync` may remove.
    roots: list[Path] = field(default_factory=list)


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


def is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _refused_link(link: Path, real: Path, root: Path, policy: str) -> str | None:
    """Why a symbolic link is not followed, or None to follow it."""
    if policy == "never":
        return 'symbolic link, not followed (ingest.follow_symlinks = "never")'
    if not real.exists():
        return f"broken symbolic link (its target {os.readlink(link)} does not exist)"
    if policy == "inside" and not is_within(real, root):
        return (f"symbolic link to {real}, outside the indexed folder {root}; not followed "
                '(set ingest.follow_symlinks = "all" to follow links anywhere)')
    return None


def discover(paths: list[Path], settings: IngestSettings) -> Discovery:
    """Files under `paths` in a stable order, with what was left out and why.

    Hidden files and folders are left out, as are matches of `ingest.exclude` and of the
    patterns in each named folder's ignore file (`.ragignore`).
    """
    found = Discovery()
    for root in paths:
        if root.is_file():  # named on the command line: read, link or not
            real = Path(os.path.realpath(root))
            found.files.append(SourceFile(root, root.name, real))
            found.roots.append(real)
            continue
        if not root.is_dir():
            found.missing.append((str(root), "no such file or folder"))
            continue
        real_root = Path(os.path.realpath(root))
        found.roots.append(real_root)
        patterns = list(settings.exclude) + _read_patterns(root / settings.ignore_file)
        _walk(root, "", real_root, (real_root,), patterns, settings.follow_symlinks, found)
    return found


def _walk(folder: Path, rel_dir: str, root: Path, ancestry: tuple[Path, ...], patterns: list[str], policy: str,
          found: Discovery) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        found.skipped.append((str(folder), f"cannot list this folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        rel = rel_dir + entry.name
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if _ignored(rel, is_dir, patterns):
            continue
        real = Path(os.path.realpath(path))
        if entry.is_symlink():
            reason = _refused_link(path, real, root, policy)
            if reason is not None:
                found.skipped.append((str(path), reason))
                continue
        if is_dir:
            if real in ancestry:
                found.skipped.append((str(path), f"symbolic link back to {real}, a folder above it; not followed"))
                continue
            _walk(path, rel + "/", root, (*ancestry, real), patterns, policy, found)
        else:
            found.files.append(SourceFile(path, rel, real))
