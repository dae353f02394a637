"""Object storage and file servers through fsspec: `s3://bucket/prefix` (AWS and any
S3-compatible store: MinIO, Ceph), `file:///path` (a mounted share), `sftp://host/path` (an SSH
server; its host key checked against known_hosts), `webdav+https://host/path` (Nextcloud,
ownCloud, any WebDAV server), and whatever other protocol fsspec has an installed implementation
for (gcs://, az://).

An item's version is what the store says identifies its bytes: the ETag (S3, WebDAV), else the
modification time with the size (SFTP, file://). Credentials come from the usual environment
variables (or the variables a source names), and are never printed.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from rag.sources.base import Item, SourceError

_SUPPORTED_HINT = ("s3:// (pip install 'rag[s3]'), sftp:// ('rag[sftp]'), webdav+https:// ('rag[webdav]'), "
                   "file://, or another fsspec protocol whose package is installed")
_WEBDAV = {"webdav": "https", "webdav+https": "https", "webdav+http": "http"}
# Where an SSH client looks for the keys of the servers it trusts (OpenSSH's own files).
_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")
_SECRET_OPTION = re.compile(r"pass|secret|token|^key$", re.IGNORECASE)


class ObjectSource:
    """Every file under a URL's prefix, named by its path below it."""

    def __init__(self, name: str, url: str, options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.name = name
        self.url = url
        options = dict(options or {})
        self._secrets = [str(v) for k, v in options.items() if _SECRET_OPTION.search(k) and v]
        scheme, _, rest = url.partition("://")
        if not rest:
            raise SourceError(f"source {name!r}: {url!r} is not a URL; use {_SUPPORTED_HINT}")
        self.protocol, self.root, options = _opening(name, scheme.lower(), rest, options)
        try:
            # A fresh instance: fsspec's cached ones keep listings, and a run must see the store as it is.
            self.fs = fsspec.filesystem(self.protocol, skip_instance_cache=True, **options)
        except (ImportError, ValueError) as exc:
            raise SourceError(f"source {name!r}: cannot open {scheme}:// ({exc}); use {_SUPPORTED_HINT}") from None
        except Exception as exc:  # noqa: BLE001 - SFTP connects here: refused, a wrong password, an unknown host key
            if self.protocol == "sftp":
                _close_failed_session(exc)
            raise SourceError(f"source {name!r}: cannot connect to {url} ({type(exc).__name__}: "
                              f"{self._without_secrets(str(exc))}); nothing was deleted") from None

    def items(self) -> Iterator[Item]:
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            raise SourceError(f"source {self.name!r}: {self.url} does not exist (or is not readable with the "
                              "credentials given); nothing was deleted") from None
        except Exception as exc:  # noqa: BLE001 - every backend has its own errors: all mean "not now"
            raise SourceError(f"source {self.name!r}: cannot list {self.url} ({type(exc).__name__}: "
                              f"{self._without_secrets(str(exc))}); nothing was deleted") from None
        for path, info in sorted(found.items()):
            if info.get("type", "file") != "file":
                continue
            relative = posixpath.relpath(path.lstrip("/"), self.root.lstrip("/") or ".")
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
                              f"{self._without_secrets(str(exc))})") from None

    def close(self) -> None:
        """Ends the SSH session an SFTP source holds open (the other protocols hold none)."""
        if self.protocol == "sftp":
            self.fs.client.close()

    def _without_secrets(self, text: str) -> str:
        """An error message with no credential of the source's or from the environment in it."""
        environ = [os.environ.get(n, "") for n in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")]
        for value in [*self._secrets, *environ]:
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text[:500]


def _opening(name: str, scheme: str, rest: str, options: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """fsspec's protocol, the root path in it and the options it is opened with: SFTP and WebDAV
    take their server as options, where a source's URL names it."""
    if scheme in ("sftp", "ssh"):
        return "sftp", *_sftp(name, rest, options)
    if scheme in _WEBDAV:
        host, _, path = rest.partition("/")
        user, password = options.pop("username", None), options.pop("password", None)
        if user is not None or password is not None:  # HTTP basic auth (Nextcloud: an app password)
            options["auth"] = (user or "", password or "")
        return "webdav", "/" + unquote(path).strip("/"), {"base_url": f"{_WEBDAV[scheme]}://{host}", **options}
    return scheme, rest.rstrip("/") if scheme != "file" else "/" + rest.strip("/"), options


def _sftp(name: str, rest: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The folder and paramiko's options for `sftp://[user@]host[:port]/path`: the server's host
    key must be in a known_hosts file (fsspec alone would trust any key it is shown, and send the
    password to whoever answers)."""
    parts = urlsplit("sftp://" + rest)
    if parts.password:
        raise SourceError(f"source {name!r}: put the SFTP password in credentials, not in the URL")
    opened: dict[str, Any] = {"host": parts.hostname, "timeout": 15}
    if parts.port:
        opened["port"] = parts.port
    if parts.username:
        opened["username"] = unquote(parts.username)
    opened.update(options)
    try:
        from fsspec.implementations import sftp
    except ImportError as exc:
        raise SourceError(f"source {name!r}: sftp:// needs paramiko ({exc}): pip install 'rag[sftp]'") from None
    if not hasattr(sftp, "HOST_KEY_POLICIES"):  # fsspec before 2026.9 trusts any host key, whatever it is told
        raise SourceError(f"source {name!r}: sftp:// needs fsspec>=2026.9, which checks host keys: "
                          "pip install 'rag[sftp]'")
    files = opened.pop("known_hosts", None) or _KNOWN_HOSTS
    if "host_key_policy" not in opened:  # an operator may still write host_key_policy = "auto_add": never a default
        opened["host_key_policy"] = _known_hosts_policy([files] if isinstance(files, str) else list(files))
    return "/" + unquote(parts.path).strip("/"), opened


def _known_hosts_policy(files: list[str]) -> Any:
    """A paramiko policy accepting a server only with a key its known_hosts entry lists (fsspec
    loads no known hosts, so every server reaches this policy)."""
    import paramiko

    class KnownHosts(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            known = paramiko.HostKeys()
            for path in (os.path.expanduser(f) for f in files):
                if os.path.isfile(path):
                    known.load(path)
            listed = known.lookup(hostname) or {}
            if listed.get(key.get_name()) == key:
                return
            changed = key.get_name() in listed
            problem = "does not match its known_hosts entry" if changed else "is in no known_hosts file"
            raise paramiko.SSHException(
                f"the {key.get_name()} host key of {hostname} {problem} ({', '.join(files)}); check it and add it "
                "(ssh-keyscan -p PORT HOST >> FILE) or name the file in the source's options.known_hosts")

    return KnownHosts()


def _close_failed_session(exc: BaseException) -> None:
    """Closes the SSH session a failed connect leaves open: paramiko keeps its thread and socket
    until the server gives up on the login (minutes), and a source may fail at every run."""
    import paramiko

    frame = exc.__traceback__
    while frame is not None:
        client = frame.tb_frame.f_locals.get("self")
        if isinstance(client, paramiko.SSHClient):
            client.close()
            return
        frame = frame.tb_next


def _version(info: dict[str, Any]) -> str:
    """The store's tag of an item's bytes: its ETag, else mtime and size."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return "etag:" + str(etag).strip('"')
    mtime = (info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("modified")
             or info.get("created"))
    return f"mtime:{mtime}:size:{info.get('size')}"
