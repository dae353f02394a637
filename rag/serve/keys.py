"""API keys: scoped, optionally limited to documents by filters, stored only as hashes.

A key reads `rag_<id>_<secret>`. The id finds the row; the secret is compared as a SHA-256
digest in constant time (the secret has 256 random bits, so a slow hash would add nothing).
Keys live in `keys.sqlite` in the index folder, outside its versions, so `--index` selects them
and no index write can lose them; `serve.keys_file` can point elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, get_args

from rag.errors import RagError
from rag.filters import parse_filters

KEYS_FILE = "keys.sqlite"
Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_TOKEN = re.compile(r"^rag_([0-9a-f]{12})_([A-Za-z0-9_\-]{43})$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_id     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    filters    TEXT NOT NULL,      -- JSON list of --filter expressions every request is limited to
    digest     TEXT NOT NULL,      -- sha256 of the secret; the secret itself is never stored
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    on_behalf  INTEGER NOT NULL DEFAULT 0  -- 1: may pass the person it serves (X-Rag-User, X-Rag-Groups)
);
CREATE UNIQUE INDEX IF NOT EXISTS active_names ON keys(name) WHERE revoked_at IS NULL;
"""


@dataclass(frozen=True)
class ApiKey:
    """What a key may do; never holds the secret."""

    key_id: str
    name: str
    scope: Scope
    filters: tuple[str, ...]
    created_at: str
    revoked_at: str | None = None
    # A portal's key that passes the person it serves (X-Rag-User, X-Rag-Groups) and then gets
    # exactly that person's access, within its own filters.
    on_behalf: bool = False

    def allows(self, needed: Scope) -> bool:
        """read < write < admin: each scope includes the ones before it."""
        return SCOPES.index(self.scope) >= SCOPES.index(needed)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "id": self.key_id, "scope": self.scope, "filters": list(self.filters),
                "created_at": self.created_at, "revoked_at": self.revoked_at, "on_behalf": self.on_behalf}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def keys_path(index_path: Path, keys_file: str = "") -> Path:
    return Path(keys_file) if keys_file else Path(index_path) / KEYS_FILE


class KeyStore:
    """The keys of one service (one index folder, or `serve.keys_file`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._configured = False  # once true it stays true: keys are revoked, never removed
        self._migrated = False  # the on_behalf column exists (never dropped once added)

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        if not create and not self.path.is_file():
            raise RagError(f"no keys at {self.path}; add one with `rag keys add NAME --scope read`")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fresh = not self.path.exists()
                conn = sqlite3.connect(self.path)
                if fresh:
                    os.chmod(self.path, 0o600)  # hashes only, but nobody else's business
                conn.executescript(_SCHEMA)
                _add_on_behalf(conn)
                return conn
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        except (OSError, sqlite3.Error) as exc:
            raise RagError(f"cannot open the key store {self.path} ({exc}); check the folder and its "
                           "permissions, or set serve.keys_file") from None

    def add(self, name: str, scope: Scope, filters: list[str] | None = None,
            on_behalf: bool = False) -> tuple[ApiKey, str]:
        """A new key and its token; the token is returned once and never stored."""
        if not _NAME.match(name):
            raise RagError(f"key name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter "
                           "or digit (e.g. hr-portal)")
        if scope not in SCOPES:
            raise RagError(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
        if on_behalf and scope == "admin":
            raise RagError("an --on-behalf key acts as the people it serves, who are never admins: give it "
                           "--scope read or write, and make a separate admin key for operators")
        filters = list(filters or [])
        parse_filters(filters)  # a bad filter is refused now, not on the first request
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key = ApiKey(key_id, name, scope, tuple(filters), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     on_behalf=on_behalf)
        with closing(self._connect(create=True)) as conn:
            try:
                with conn:
                    conn.execute("INSERT INTO keys (key_id, name, scope, filters, digest, created_at, on_behalf) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (key_id, name, scope, json.dumps(filters), _digest(secret), key.created_at,
                                  int(on_behalf)))
            except sqlite3.IntegrityError:
                raise RagError(f"a key named {name!r} exists; revoke it first (`rag keys revoke {name}`) or "
                               "choose another name") from None
            except sqlite3.Error as exc:
                raise RagError(f"cannot write the key store {self.path} ({exc}); nothing was added") from None
        return key, f"rag_{key_id}_{secret}"

    def list(self, include_revoked: bool = False) -> list[ApiKey]:
        if not self.path.is_file():
            return []
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with closing(self._connect()) as conn:
            rows = conn.execute(f"SELECT key_id, name, scope, filters, created_at, revoked_at, {self._on_behalf(conn)} "
                                f"FROM keys{where} ORDER BY name, created_at").fetchall()
        return [ApiKey(i, n, s, tuple(json.loads(f)), c, r, bool(b)) for i, n, s, f, c, r, b in rows]

    def any_active(self) -> bool:
        return bool(self.list())

    def configured(self) -> bool:
        """Whether any key was ever made: from then on every request needs one, even after the
        last is revoked (revoking must never open the service)."""
        if self._configured:  # asked on every request: no file read once it is known
            return True
        if not self.path.is_file():
            return False
        with closing(self._connect()) as conn:
            self._configured = conn.execute("SELECT 1 FROM keys LIMIT 1").fetchone() is not None
        return self._configured

    def revoke(self, name: str) -> bool:
        """Revoke the active key of this name; False when there is none."""
        if not self.path.is_file():
            return False
        with closing(self._connect(create=True)) as conn, conn:
            done = conn.execute("UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                                (datetime.now(timezone.utc).isoformat(timespec="seconds"), name)).rowcount
        return bool(done)

    def verify(self, token: str) -> ApiKey | None:
        """The active key this token belongs to, or None (unknown, wrong or revoked)."""
        match = _TOKEN.match(token or "")
        key_id, secret = match.groups() if match else ("", "x" * 43)
        row = None
        if match and self.path.is_file():
            with closing(self._connect()) as conn:
                row = conn.execute("SELECT key_id, name, scope, filters, created_at, revoked_at, digest, "
                                   f"{self._on_behalf(conn)} FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        expected = row[6] if row else "0" * 64
        # Compared even when nothing matched, so a wrong id costs what a wrong secret costs.
        same = hmac.compare_digest(_digest(secret), expected)
        if not (row and same and row[5] is None):
            return None
        return ApiKey(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4], None, bool(row[7]))

    def _on_behalf(self, conn: sqlite3.Connection) -> str:
        """The column, or 0 in a key store made before it existed (opened read-only, not migrated);
        looked up until found, not on every request after."""
        self._migrated = self._migrated or _has_on_behalf(conn)
        return "on_behalf" if self._migrated else "0"


def _has_on_behalf(conn: sqlite3.Connection) -> bool:
    return any(column[1] == "on_behalf" for column in conn.execute("PRAGMA table_info(keys)"))


def _add_on_behalf(conn: sqlite3.Connection) -> None:
    """Key stores made before --on-behalf existed get the column on their next write."""
    if not _has_on_behalf(conn):
        with conn:
            conn.execute("ALTER TABLE keys ADD COLUMN on_behalf INTEGER NOT NULL DEFAULT 0")
