"""A branch of a Git repository (documentation folders, Markdown, READMEs) through dulwich, pure
Python: no git binary needed.

    [[sources]]
    name = "handbook"
    url = "git+https://git.example.com/corp/handbook.git"   # or git+http://, git+file:///srv/repo
    options = {branch = "main", path = "docs"}   # default: the remote's default branch, the whole tree
    credentials = {username = "GIT_USER", password = "GIT_TOKEN"}   # environment variable names

Each run lists the files of the branch's tip commit under `path`; an item's version is its blob's
SHA, so the next run reads only the files whose contents changed, and `commit` says which commit
was read. A remote (http, https) is fetched into a cache under `$XDG_CACHE_HOME/rag/sources/git/`
(or ~/.cache/...), shallow (`depth`, default 1; 0 keeps the whole history); a `git+file://`
repository is read where it is. Hidden files and folders, symbolic links and submodules are left
out. Credentials are read from the environment variables named, and never printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rag.sources.base import Item, SourceError
from rag.sources.settings import SourceSettings

_OPTIONS = {"branch", "path", "depth", "timeout"}
_CREDENTIALS = {"username", "password"}
_MAX_PACKS = 16  # packs in a remote's cache before they are joined into one


class GitSource:
    """The files of one branch of a Git repository, named by their path below `path`."""

    def __init__(self, declared: SourceSettings) -> None:
        self.name = declared.name
        self.url = declared.url.removeprefix("git+")
        self.commit: str | None = None  # the commit the last listing read
        unknown = set(declared.options) - _OPTIONS
        if unknown:
            raise SourceError(f"source {self.name!r}: unknown option(s) {sorted(unknown)}; a Git source takes "
                              f"{sorted(_OPTIONS)}")
        self.branch = str(declared.options.get("branch") or "").removeprefix("refs/heads/")
        self.path = str(declared.options.get("path") or "").strip("/")
        self.depth = _number(declared.options.get("depth", 1), "depth", self.name)
        self.timeout = _number(declared.options.get("timeout", 60), "timeout", self.name) or 60
        secrets = declared.secrets()  # ConfigError naming a variable that is not set
        if set(secrets) - _CREDENTIALS:
            raise SourceError(f"source {self.name!r}: a Git source's credentials are username and password")
        self._password = secrets.get("password")
        self._username = secrets.get("username") or ("git" if self._password else None)
        # What an error message must never show (a username only when one was given: "git" is not secret).
        self._hidden = [s for s in (self._password, secrets.get("username"), urlsplit(self.url).password) if s]
        self._local = self.url.startswith("file://")
        self.cache = _cache_folder(declared.url)
        self._repo: Any = None
        self._sizes: dict[str, int] = {}

    def items(self) -> Iterator[Item]:
        """The branch tip's files under `path` (fetched first from a remote); SourceError when the
        remote, the branch or the folder cannot be read: the run then deletes nothing."""
        self.close()  # a second listing opens the repository again
        tip = self._tip_from_folder() if self._local else self._tip_from_remote()
        tree = self._folder_tree(tip)
        self.commit = tip.decode()
        self._sizes = _read_sizes(self.cache)
        listed: list[Item] = []
        try:
            for entry in self._repo.object_store.iter_tree_contents(tree):
                relative = entry.path.decode("utf-8", "replace")
                if not stat.S_ISREG(entry.mode) or any(p.startswith(".") for p in relative.split("/")):
                    continue  # symbolic links, submodules and hidden files are not documents
                blob = entry.sha.decode()
                listed.append(Item(relative, blob, self._size(blob)))
        except Exception as exc:  # noqa: BLE001 - a missing object (a partial copy), an unreadable pack
            raise SourceError(f"source {self.name!r}: cannot list commit {tip.decode()[:12]} of {self._safe_url()} "
                              f"({self._clean(exc)}); nothing was deleted") from None
        _write_sizes(self.cache, {i.version: i.size for i in listed})
        return iter(sorted(listed, key=lambda i: i.id))

    def fetch(self, item: Item) -> bytes:
        """The blob the listing named (its SHA is the item's version)."""
        try:
            data: bytes = self._repo.object_store[item.version.encode()].data
            return data
        except Exception as exc:  # noqa: BLE001 - a missing object or an unreadable pack: "not now"
            raise SourceError(f"source {self.name!r}: cannot read {item.id} ({self._clean(exc)})") from None

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def _tip_from_folder(self) -> bytes:
        """The branch tip of a repository on this machine, read where it is (nothing copied)."""
        from dulwich.repo import Repo

        folder = self.url.removeprefix("file://")
        try:
            self._repo = Repo(folder)
        except Exception as exc:  # noqa: BLE001 - missing folder, not a repository, unreadable
            raise SourceError(f"source {self.name!r}: cannot open the repository {self.url} "
                              f"({self._clean(exc)}); nothing was deleted") from None
        refs = self._repo.refs
        return self._pick(refs.as_dict(), refs.get_symrefs(), refs.as_dict(b"refs/heads"))

    def _tip_from_remote(self) -> bytes:
        """The branch tip, fetched (only what the cache lacks) into the cache's bare repository."""
        from dulwich.client import get_transport_and_path
        from dulwich.config import ConfigDict

        self._repo = _open_cache(self.cache)
        config = ConfigDict()
        config.set((b"http",), b"timeout", str(self.timeout).encode())  # a stalled server fails the run

        def determine_wants(refs: dict[bytes, bytes], depth: int | None = None) -> list[bytes]:
            heads = {k.removeprefix(b"refs/heads/"): v for k, v in refs.items() if k.startswith(b"refs/heads/")}
            tip = self._pick(refs, {}, heads, quiet=True)  # a missing branch is named after the fetch
            return [] if not tip or tip in self._repo.object_store else [tip]

        client: Any = None
        try:
            client, path = get_transport_and_path(self.url, config=config, quiet=True, username=self._username,
                                                  password=self._password)
            result = client.fetch(path, self._repo, determine_wants=determine_wants, depth=self.depth or None,
                                  ref_prefix=[b"HEAD", b"refs/heads/"])
        except Exception as exc:  # noqa: BLE001 - refused, timed out, 401/404, a broken pack: all "not now"
            raise SourceError(f"source {self.name!r}: cannot fetch {self._safe_url()} ({self._reason(exc)}); "
                              "nothing was deleted") from None
        finally:
            if getattr(client, "pool_manager", None) is not None:
                client.pool_manager.clear()  # its connections, not left for the garbage collector
        heads = {k.removeprefix(b"refs/heads/"): v for k, v in result.refs.items()
                 if k.startswith(b"refs/heads/") and v}
        tip = self._pick({k: v for k, v in result.refs.items() if v}, result.symrefs, heads)
        # A head in the cache is what the next fetch says it has (git's own servers then send only new
        # objects; dulwich's send the tip's whole tree again when the fetch is shallow).
        self._repo.refs[b"refs/heads/" + (self.branch.encode() or b"default-branch")] = tip
        if len(self._repo.object_store.packs) > _MAX_PACKS:
            self._repo.object_store.repack()
        return tip

    def _pick(self, refs: dict[bytes, bytes], symrefs: dict[bytes, bytes], heads: dict[bytes, bytes],
              quiet: bool = False) -> bytes:
        """The branch's tip commit among the refs; SourceError naming the branches there are."""
        if self.branch:
            tip = heads.get(self.branch.encode())
        else:
            tip = refs.get(symrefs.get(b"HEAD", b""), refs.get(b"HEAD"))
        if tip or quiet:
            return tip or b""
        there = ", ".join(sorted(h.decode("utf-8", "replace") for h in heads)[:20]) or "none"
        what = f"branch {self.branch!r}" if self.branch else "a default branch (HEAD)"
        raise SourceError(f"source {self.name!r}: {self._safe_url()} has no {what} (branches: {there}); "
                          "nothing was deleted")

    def _folder_tree(self, tip: bytes) -> bytes:
        """The tree of `path` in the tip commit; SourceError when the folder is not there."""
        try:
            tree: bytes = self._repo[tip].tree
            for part in filter(None, self.path.split("/")):
                mode, tree = self._repo[tree][part.encode()]
                if not stat.S_ISDIR(mode):
                    raise KeyError(part)
            return tree
        except KeyError:
            raise SourceError(f"source {self.name!r}: the branch has no folder {self.path!r} in commit "
                              f"{tip.decode()[:12]}; nothing was deleted") from None

    def _size(self, blob: str) -> int:
        """A blob's size: recorded the first time it is seen (a blob never changes)."""
        if blob not in self._sizes:
            self._sizes[blob] = len(self._repo.object_store[blob.encode()].data)
        return self._sizes[blob]

    def _safe_url(self) -> str:
        """The URL without the user and password written in it."""
        return re.sub(r"//[^/@\s]*@", "//***@", self.url)

    def _reason(self, exc: BaseException) -> str:
        """Why a fetch failed, in words for the two answers a server gives most."""
        kind = type(exc).__name__
        if kind == "HTTPUnauthorized":
            given = self._password or urlsplit(self.url).password
            return "the server refused the credentials" if given else "the server asks for credentials"
        if kind == "NotGitRepository":
            return "no Git repository at that address"
        return self._clean(exc)

    def _clean(self, exc: BaseException) -> str:
        """An error's type and message with no credential in it."""
        text = f"{type(exc).__name__}: {exc}"
        for secret in self._hidden:
            text = text.replace(secret, "***")
        return re.sub(r"//[^/@\s]*@", "//***@", text)[:500]


def _number(value: Any, option: str, name: str) -> int:
    """A whole, non-negative option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SourceError(f"source {name!r}: options.{option} must be a whole number >= 0, not {value!r}")
    return value


def _cache_folder(url: str) -> Path:
    """Where a repository's fetched objects and blob sizes are kept between runs (one per URL)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag" / "sources" / "git" / hashlib.sha256(url.encode()).hexdigest()[:24]


def _open_cache(folder: Path) -> Any:
    """The cache's bare repository, made anew when missing or unreadable (it only holds copies)."""
    from dulwich.repo import Repo

    repo_folder = folder / "repo.git"
    try:
        return Repo(str(repo_folder))
    except Exception:  # noqa: BLE001 - absent or broken: start it again
        shutil.rmtree(repo_folder, ignore_errors=True)
        repo_folder.mkdir(parents=True)
        return Repo.init_bare(str(repo_folder))


def _read_sizes(folder: Path) -> dict[str, int]:
    try:
        sizes = json.loads((folder / "sizes.json").read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in sizes.items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_sizes(folder: Path, sizes: dict[str, int]) -> None:
    """The listed blobs' sizes (only theirs: the file never grows past one listing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"sizes.json.{os.getpid()}"
        temporary.write_text(json.dumps(sizes), encoding="utf-8")
        temporary.replace(folder / "sizes.json")
    except OSError:
        pass  # sizes are for progress only: the next run reads them again
