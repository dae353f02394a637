"""Metadata filters (`--filter KEY=VALUE`), turned into the set of chunk ids a search may return.

The set is computed in SQLite and handed to the vector and BM25 searches, which only consider
those ids: a filter that matches 1% of the corpus still yields k results when k exist, which
filtering the top k afterwards cannot promise.

Forms: `KEY=VALUE` (equal; a glob when VALUE has * ? or [), `KEY>=V`, `KEY<=V`, `KEY>V`,
`KEY<V`, and `KEY=A..B` (inclusive; either end may be left out). V is compared as a number when
it is one, as a date when it is an ISO date (YYYY-MM-DD, optionally with a time), and as text
otherwise. Keys: collection, doc_id, source, title, format, mtime (the file's modification time),
indexed_at, page, or any key of a record's metadata. mtime and indexed_at take dates, page numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rag.errors import ConfigError

_FORM = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|=|>|<)\s*(.*?)\s*$", re.S)
_GLOB = re.compile(r"[*?\[]")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
# Document columns; everything else is looked up in the document's, then the chunk's, metadata.
_COLUMNS = {"collection": "d.collection", "doc_id": "d.doc_id", "source": "d.source", "title": "d.title",
            "format": "d.format", "mtime": "d.mtime", "indexed_at": "d.indexed_at"}
_EPOCH_COLUMNS = {"mtime"}
# Keys whose values have one type: a value that is not of it could never match, so it is an error.
_DATE_KEYS = {"mtime", "indexed_at"}
_NUMBER_KEYS = {"page"}


@dataclass(frozen=True)
class Filter:
    key: str
    op: str  # "=", "glob", ">=", "<=", ">", "<"
    value: Any

    def __str__(self) -> str:
        return f"{self.key}{'=' if self.op == 'glob' else self.op}{self.value}"


def _typed(key: str, text: str, original: str) -> Any:
    """A number, a date (epoch seconds for mtime, ISO text otherwise) or the text itself."""
    try:
        return float(text) if re.fullmatch(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?", text) else _date(key, text)
    except ValueError:
        raise ConfigError(f"--filter {original!r}: {text!r} is not a valid date; use YYYY-MM-DD") from None


def _date(key: str, text: str) -> Any:
    if not _ISO_DATE.match(text):
        return text
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if key in _EPOCH_COLUMNS:
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    return text


def _checked(filters: list[Filter], expression: str) -> list[Filter]:
    """Refuse values that cannot be compared as their key's type (a filter that silently
    matches nothing looks like an empty knowledge base)."""
    for f in filters:
        if f.key in _DATE_KEYS and (f.op == "glob" or not (isinstance(f.value, float) or _ISO_DATE.match(str(f.value)))):
            raise ConfigError(f"--filter {expression!r}: {f.key} is a date; compare it with YYYY-MM-DD "
                              f"(optionally with a time), e.g. {f.key}>=2026-01-01")
        if f.key in _NUMBER_KEYS and not isinstance(f.value, float):
            raise ConfigError(f"--filter {expression!r}: {f.key} is a number; e.g. {f.key}=3 or {f.key}=2..5")
    return filters


def parse_filter(expression: str) -> list[Filter]:
    """One `--filter` argument; a range gives two filters."""
    return _checked(_parse_filter(expression), expression)


def _parse_filter(expression: str) -> list[Filter]:
    match = _FORM.match(expression)
    if not match or not match.group(3):
        raise ConfigError(f"--filter {expression!r}: expected KEY=VALUE, KEY>=VALUE, KEY<=VALUE, KEY>VALUE, "
                          "KEY<VALUE or KEY=FROM..TO (for example source=hr/*.md or mtime>=2026-01-01)")
    key, op, value = match.groups()
    if op == "=" and ".." in value and not _GLOB.search(value):
        low, high = (part.strip() for part in value.split("..", 1))
        if not low and not high:
            raise ConfigError(f"--filter {expression!r}: a range needs at least one end")
        out = []
        if low:
            out.append(Filter(key, ">=", _typed(key, low, expression)))
        if high:
            out.append(Filter(key, "<=", _typed(key, high, expression)))
        return out
    if op == "=":
        return [Filter(key, "glob", value) if _GLOB.search(value) else Filter(key, "=", _typed(key, value, expression))]
    return [Filter(key, op, _typed(key, value, expression))]


def parse_filters(expressions: list[str] | tuple[str, ...] | None) -> list[Filter]:
    return [f for expression in expressions or () for f in parse_filter(expression)]


def _key_sql(key: str) -> str:
    if key in _COLUMNS:
        return _COLUMNS[key]
    name = '"' + key.replace('"', '').replace("'", "") + '"'
    if key == "page":
        return f"json_extract(c.metadata, '$.{name}')"
    # A record's own fields are kept under "fields" in the document's metadata.
    return (f"COALESCE(json_extract(d.metadata, '$.fields.{name}'), json_extract(d.metadata, '$.{name}'), "
            f"json_extract(c.metadata, '$.{name}'))")


def to_sql(filters: list[Filter]) -> tuple[str, list[Any]]:
    """A WHERE clause over chunks `c` and documents `d`, with its parameters."""
    clauses, params = [], []
    for f in filters:
        column = _key_sql(f.key)
        if f.op == "glob":
            clauses.append(f"CAST({column} AS TEXT) GLOB ?")
            params.append(f.value)
        elif isinstance(f.value, float):
            clauses.append(f"CAST({column} AS REAL) {f.op} ?" if f.op != "=" else
                           f"({column} IS NOT NULL AND CAST({column} AS REAL) = ?)")
            params.append(f.value)
        else:
            clauses.append(f"CAST({column} AS TEXT) {f.op} ?")
            params.append(str(f.value))
    return " AND ".join(clauses) or "1", params
