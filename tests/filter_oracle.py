"""The documented meaning of `--filter` (rag/filters.py's docstring), written again in plain
Python, independently of the SQL it is compiled to: the brute-force oracle the property tests
compare every filter route with (searches, listings, deletes, key filters)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

TEXT_KEYS = ("collection", "doc_id", "source", "title", "format")
NUMBER = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_FORM = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|=|>|<)\s*(.*?)\s*$", re.S)


def glob(pattern: str, text: str) -> bool:
    """SQLite's GLOB, as documented: * any run, ? one character, [set] with ranges, ^ or !
    negating, ] first in a set being itself."""

    @lru_cache(maxsize=None)
    def match(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(text)
        c = pattern[i]
        if c == "*":
            return match(i + 1, j) or (j < len(text) and match(i, j + 1))
        if j == len(text):
            return False
        if c == "?":
            return match(i + 1, j + 1)
        if c == "[":
            ch, k = text[j], i + 1
            invert = k < len(pattern) and pattern[k] in "^!"
            k += invert
            seen, prior = False, None
            if k < len(pattern) and pattern[k] == "]":
                seen, prior, k = ch == "]", None, k + 1
            while k < len(pattern) and pattern[k] != "]":
                if pattern[k] == "-" and prior is not None and k + 1 < len(pattern) and pattern[k + 1] != "]":
                    seen = seen or prior <= ch <= pattern[k + 1]
                    prior, k = None, k + 2
                    continue
                seen = seen or ch == pattern[k]
                prior, k = pattern[k], k + 1
            if k >= len(pattern):
                return False  # never closed (the parser refuses these)
            return seen != invert and match(k + 1, j + 1)
        return c == text[j] and match(i + 1, j + 1)

    return match(0, 0)


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def conditions(expression: str) -> list[tuple[str, str, str]]:
    """(key, op, value text) of one expression, a range giving two; op "glob" for a glob."""
    key, op, value = _FORM.match(expression).groups()
    if op == "=" and re.search(r"[*?\[]", value):
        return [(key, "glob", value)]
    if op == "=" and ".." in value:
        low, high = (part.strip() for part in value.split("..", 1))
        return ([(key, ">=", low)] if low else []) + ([(key, "<=", high)] if high else [])
    return [(key, op, value)]


def _compare(stored: Any, op: str, value: Any) -> bool:
    return {"=": stored == value, ">=": stored >= value, "<=": stored <= value, ">": stored > value,
            "<": stored < value}[op]


def stored_value(key: str, document: dict[str, Any], chunk: dict[str, Any]) -> Any:
    """What a filter on `key` reads: a column, or the first of the record's field, the
    document's metadata and the chunk's metadata that holds it (not null)."""
    if key in TEXT_KEYS or key in ("mtime", "indexed_at"):
        return document.get(key)
    if key == "page":
        return chunk.get("page")
    for place in (document.get("metadata", {}).get("fields", {}), document.get("metadata", {}), chunk):
        if isinstance(place, dict) and place.get(key) is not None:
            return place[key]
    return None


def holds(condition: tuple[str, str, str], document: dict[str, Any], chunk: dict[str, Any]) -> bool:
    key, op, value = condition
    stored = stored_value(key, document, chunk)
    if stored is None:
        return False
    if key in TEXT_KEYS:
        return glob(value, str(stored)) if op == "glob" else _compare(str(stored), op, value)
    if key == "mtime":
        wanted = float(value) if NUMBER.fullmatch(value) else _moment(value).timestamp()
        return _compare(float(stored), op, wanted)
    if key == "indexed_at":
        return _compare(stored, op, _moment(value).astimezone(timezone.utc).isoformat(timespec="seconds"))
    if key == "page":
        return isinstance(stored, (int, float)) and not isinstance(stored, bool) and _compare(stored, op, float(value))
    if isinstance(stored, bool):
        return op == "=" and value == ("true" if stored else "false")
    if isinstance(stored, (int, float)):
        return op != "glob" and NUMBER.fullmatch(value) is not None and _compare(stored, op, float(value))
    if isinstance(stored, str):
        return glob(value, stored) if op == "glob" else _compare(stored, op, value)
    return False  # lists and objects


def matches(expressions: list[str], document: dict[str, Any], chunk: dict[str, Any]) -> bool:
    return all(holds(c, document, chunk) for e in expressions for c in conditions(e))
