"""Object storage and file servers through fsspec: `s3://bucket/prefix` (AWS and any
S3-compatible store: MinIO, Ceph), `file:///path` (a mounted share), and whatever other protocol
fsspec has an installed implementation for (gcs://, az://, sftp://, webdav://).

An item's version is what the store says identifies its bytes: the ETag (S3), else the
modification time with the size. Credentials come from the usual environment variables (or the
variables a source names), and are never printed.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from typing import Any

from rag.sources.base import Item, SourceError

_SUPPORTED_HINT = "s3:// (pip install s3fs), file://, or another fsspec protocol whose package is installed"


class ObjectSource:
    """Every file under a URL's prefix, named by its path below it."""

    def __init__(self, name: str, url: str, options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.name = name
        self.url = url
        protocol, _, rest = url.partition("://")
        if not rest:
            raise SourceError(f"source {name!r}: {url!r} is not a URL; use {_SUPPORTED_HINT}")
        self.root = rest.rstrip("/") if protocol != "file" else "/" + rest.strip("/")
        try:
            # A fresh instance: fsspec's cached ones keep listings, and a run must see the store as it is.
            self.fs = fsspec.filesystem(protocol, skip_instance_cache=True, **(options or {}))
        except (ImportError, ValueError) as exc:
            raise SourceError(f"source {name!r}: cannot open {protocol}:// ({exc}); use {_SUPPORTED_HINT}") from None

    def items(self) -> Iterator[Item]:
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            raise SourceError(f"source {self.name!r}: {self.url} does not exist (or is not readable with the "
                              "credentials given); nothing was deleted") from None
        except Exception as exc:  # noqa: BLE001 - every backend has its own errors: all mean "not now"
            raise SourceError(f"source {self.name!r}: cannot list {self.url} ({type(exc).__name__}: "
                              f"{_without_secrets(str(exc))}); nothing was deleted") from None
        for path, info in sorted(found.items()):
            if info.get("type", "file") != "file":
                continue
            relative = posixpath.relpath(path.lstrip("/"), self.root.lstrip("/"))
            if relative.startswith("..") or any(part.startswith(".") for part in relative.split("/")):
                continue  # hidden files and folders are left out, as `rag index` leaves them
            yield Item(relative, _version(info), int(info.get("size") or 0))

    def fetch(self, item: Item) -> bytes:
        path = posixpath.join(self.root, item.id)
        try:
            with self.fs.open(path, "rb") as handle:
                data: bytes = handle.read()
                return data
        except Exception as exc:  # noqa: BLE001
            raise SourceError(f"source {self.name!r}: cannot read {item.id} ({type(exc).__name__}: "
                              f"{_without_secrets(str(exc))})") from None

    def close(self) -> None:
        return None


def _version(info: dict[str, Any]) -> str:
    """The store's tag of an item's bytes: its ETag, else mtime and size."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return "etag:" + str(etag).strip('"')
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    return f"mtime:{mtime}:size:{info.get('size')}"


def _without_secrets(text: str) -> str:
    """An error message with no credential from the environment in it."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return text[:500]
