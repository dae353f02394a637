"""A document's access list: who may read it, as a record gives it. Checked when it is read:
a list that cannot be understood is refused with the record, never indexed as if it were open."""

from __future__ import annotations

from typing import Any

from rag.errors import IngestError

_MOST = 10_000  # names in one list


def access_list(value: Any, where: str | None = None) -> str | dict[str, list[str]]:
    """"public", or {"users": [...], "groups": [...]} with the names sorted and unique."""
    if value == "public":
        return "public"
    if not isinstance(value, dict) or not set(value) <= {"users", "groups"}:
        raise IngestError('"acl" must be "public" or an object with "users" and/or "groups" (lists of names), '
                          f"got {type(value).__name__}{' with ' + ', '.join(map(repr, sorted(value))) if isinstance(value, dict) else ''}",
                          where)
    canonical: dict[str, list[str]] = {}
    for field in ("users", "groups"):
        names = value.get(field, [])
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise IngestError(f'"acl.{field}" must be a list of non-empty names', where)
        if len(names) > _MOST:
            raise IngestError(f'"acl.{field}" lists {len(names):,} names, over {_MOST:,}; use groups', where)
        canonical[field] = sorted(set(names))
    return canonical
