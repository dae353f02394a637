"""Sources declared in a config file as `[[sources]]` tables: what to read, into which
collection, how often, and with which credentials (named by environment variable, never written
in the file).

    [[sources]]
    name = "handbook"
    url = "s3://corp-docs/handbook"
    collection = "handbook"          # default: the source's name
    every = "15m"                    # or "2h", "1d"; "" runs only when asked (rag sources run)
    include = ["*.md", "*.pdf"]      # globs over the item's path in the source; empty: everything
    exclude = ["drafts/*"]
    sync = true                      # remove documents whose item is gone (index.sync_max_delete guards it)
    endpoint = "http://minio:9000"   # S3-compatible stores
    region = "eu-west-1"
    credentials = {key = "HANDBOOK_KEY_ID", secret = "HANDBOOK_SECRET"}   # environment variable names

File servers (rag/sources/objects.py) take the server from the URL and the rest as options:

    url = "sftp://files.corp/srv/handbook"       # pip install paramiko; the path is absolute
    options = {port = 2222, username = "rag", known_hosts = "/etc/rag/known_hosts"}
    credentials = {password = "HANDBOOK_SFTP_PASSWORD"}   # or options.key_filename, a private key

The SFTP server's host key must be listed in known_hosts (default: ~/.ssh/known_hosts, then
/etc/ssh/ssh_known_hosts; `ssh-keyscan -p 2222 files.corp` prints its line, to check before
adding); an unknown or changed key refuses the server before any password is sent.

    url = "webdav+https://cloud.corp/remote.php/dav/files/rag/Handbook"   # pip install webdav4
    options = {username = "rag"}                  # HTTP basic auth; Nextcloud: an app password
    credentials = {password = "HANDBOOK_DAV_PASSWORD"}

`webdav://host/path` is `webdav+https://`; `webdav+http://` only for a server on a trusted
network. The path is the full one on the server (a SharePoint library that answers WebDAV with
basic auth: https://host/sites/Team/Shared Documents, spaces as they are). Other options go to
the HTTP client (e.g. verify = "/etc/ssl/corp-ca.pem", timeout = 30).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rag.errors import ConfigError

_EVERY = re.compile(r"^(\d+)\s*([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SourceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    url: str = Field(min_length=3)
    collection: str = ""
    every: str = ""
    cron: str = ""  # instead of `every`: a cron expression (minute hour day month weekday), in UTC
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    sync: bool = True
    endpoint: str = ""
    region: str = ""
    credentials: dict[str, str] = Field(default_factory=dict)
    # What only one kind of source reads (a Git branch, a site's page limit, Confluence spaces; for
    # fsspec's file systems, their own options such as an SFTP port): see each kind in the README.
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("every")
    @classmethod
    def _every(cls, value: str) -> str:
        if value and not _EVERY.match(value.strip()):
            raise ValueError(f"{value!r}: write a number and a unit, e.g. 30s, 15m, 2h or 1d (or \"\" for on demand)")
        return value.strip()

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if value and not croniter.is_valid(value.strip()):
            raise ValueError(f"{value!r} is not a cron expression (minute hour day month weekday, e.g. \"0 2 * * *\")")
        return value.strip()

    @model_validator(mode="after")
    def _one_schedule(self) -> "SourceSettings":
        if self.every and self.cron:
            raise ValueError("give `every` or `cron`, not both")
        return self

    @property
    def scheduled(self) -> bool:
        return bool(self.every or self.cron)

    def next_run(self, last_finished: float | None, now: float) -> float | None:
        """When the source is due: right away when it never ran, else `every` after its last run
        or the cron expression's next time after it (UTC); None: only on demand."""
        if not self.scheduled:
            return None
        if last_finished is None:
            return now
        if self.cron:
            from croniter import croniter

            return float(croniter(self.cron, last_finished).get_next(float))
        return last_finished + (self.interval or 0)

    @property
    def target(self) -> str:
        """The collection its documents go to."""
        return self.collection or self.name

    @property
    def interval(self) -> float | None:
        """Seconds between scheduled runs; None: only on demand."""
        found = _EVERY.match(self.every)
        return int(found.group(1)) * _UNIT[found.group(2)] if found else None

    def secrets(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """The credentials, read from the environment variables the source names (a missing one is
        an error naming it, never its value)."""
        environ = dict(os.environ) if environ is None else environ
        missing = [f"credentials.{o} names {v}" for o, v in self.credentials.items() if v not in environ]
        if missing:
            raise ConfigError(f"source {self.name!r}: {', '.join(missing)}, which is not set in the environment")
        return {option: environ[variable] for option, variable in self.credentials.items()}

    def fsspec_options(self, environ: dict[str, str] | None = None) -> dict[str, Any]:
        """What the file system is opened with: endpoint, region and the credentials read from the
        environment variables the source names (a missing one is an error naming it)."""
        environ = dict(os.environ) if environ is None else environ
        options: dict[str, Any] = dict(self.options)
        options.update(self.secrets(environ))
        if self.url.startswith("s3://"):
            # No listing cache (a run must see the bucket as it is), and a store that does not answer
            # fails the run in seconds rather than retrying for minutes.
            options.update(use_listings_cache=False,
                           config_kwargs={"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 3}})
            client: dict[str, Any] = {}
            if self.endpoint:
                client["endpoint_url"] = self.endpoint
            if self.region:
                client["region_name"] = self.region
            if client:
                options["client_kwargs"] = client
        return options


def declared_sources(config_file: str | Path | None) -> list[SourceSettings]:
    """The `[[sources]]` of a config file (none without one), checked."""
    if config_file is None:
        return []
    path = Path(config_file)
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8")).get("sources", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: sources must be [[sources]] tables, one per source")
    sources = []
    for number, table in enumerate(tables, 1):
        try:
            sources.append(SourceSettings.model_validate(table))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{path}: source {number} ({table.get('name', 'no name')}): {problems}") from None
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two sources are named {sorted({n for n in names if names.count(n) > 1})[0]!r}")
    return sources
