"""Who may read which chunks, held in memory once per index version.

A person's access filter (rag.filters.access_filter) in SQL reads every document's JSON access
list on every search: 0.3 s on 100,000 documents. Here the lists are read once, into sorted
chunk-id arrays per user, per group, public, and unlisted per collection; a search then unites
the arrays that name the person, in about a millisecond. It means exactly what the SQL means
(tests/test_access.py checks both against a brute-force oracle).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

_EMPTY = np.empty(0, dtype=np.int64)


def _names(value: Any) -> list[str]:
    """The names of an access list's `users` or `groups` (as SQLite's json_each would give them)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, str)]
    return []


def _sorted(ids: list[int]) -> np.ndarray:
    return np.unique(np.asarray(ids, dtype=np.int64))


class AccessMap:
    """Chunk ids by who may read them, from (chunk id, collection, json_type of the document's
    `acl`, its JSON text) rows: every chunk once per document showing it."""

    def __init__(self, rows: Iterable[tuple[int, str, str | None, str | None]]) -> None:
        public: list[int] = []
        users: dict[str, list[int]] = defaultdict(list)
        groups: dict[str, list[int]] = defaultdict(list)
        unlisted: dict[str, list[int]] = defaultdict(list)
        for chunk_id, collection, kind, text in rows:
            if kind is None:
                unlisted[collection].append(chunk_id)
            elif kind == "text" and text == "public":
                public.append(chunk_id)
            elif kind == "object":
                acl = json.loads(text or "{}")
                for name in set(_names(acl.get("users"))):
                    users[name].append(chunk_id)
                for name in set(_names(acl.get("groups"))):
                    groups[name].append(chunk_id)
        self.public = _sorted(public)
        self.users = {name: _sorted(ids) for name, ids in users.items()}
        self.groups = {name: _sorted(ids) for name, ids in groups.items()}
        self.unlisted = {name: _sorted(ids) for name, ids in unlisted.items()}

    def allowed(self, user: str, groups: tuple[str, ...], default: str, listed: tuple[str, ...]) -> np.ndarray:
        """The sorted chunk ids the person may read: the value of an access filter (user, groups,
        the default of collections, the collections whose default differs)."""
        parts = [self.public, self.users.get(user, _EMPTY), *(self.groups.get(g, _EMPTY) for g in groups)]
        for collection, ids in self.unlisted.items():
            if (collection in listed) != (default == "public"):
                parts.append(ids)
        return np.unique(np.concatenate(parts)) if parts else _EMPTY
