"""Metadata filters (`--filter KEY=VALUE`), turned into the set of chunk ids a search may return.

The set is computed in SQLite and handed to the vector and BM25 searches, which only consider
those ids: a filter that matches 1% of the corpus still yields k results when k exist, which
filtering the top k afterwards cannot promise.

Forms: `KEY=VALUE` (equal; a glob when VALUE has `*`, `?` or `[`), `KEY>=V`, `KEY<=V`, `KEY>V`,
`KEY<V`, and `KEY=A..B` (inclusive; either end may be left out).

Each key has a type, and a value is compared as that type, never guessed from the value:
- text keys (collection, doc_id, source, title, format) compare as text: `collection=2024` is
  the collection named "2024" and nothing else, `doc_id=a..m` orders by code point;
- date keys (mtime, the file's modification time, and indexed_at) take ISO dates (YYYY-MM-DD,
  optionally with a time and a zone; UTC when none), mtime also epoch seconds;
- page takes numbers;
- any other key is a record's or a chunk's metadata, typed by the value stored: a stored number
  compares as a number with a value that is one (`priority=1` matches 1 and 1.0), stored text as
  text (`priority=1` matches "1", never "01" or "1-urgent"), stored true/false with `true` or
  `false`; lists, objects and missing values match nothing.

Globs follow SQLite's GLOB everywhere (searches, listings, deletes and the upload check alike):
case-sensitive, `*` any run of characters, `?` one character, `[abc]`, `[a-z]` and `[^abc]` (or
`[!abc]`) one character of a set, a `]` first in a set is itself. They apply to text only.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rag.errors import ConfigError

_FORM = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|=|>|<)\s*(.*?)\s*$", re.S)
_GLOB = re.compile(r"[*?\[]")
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
# Document columns holding text; every other key but the typed ones below is metadata.
TEXT_KEYS = {"collection": "d.collection", "doc_id": "d.doc_id", "source": "d.source", "title": "d.title",
             "format": "d.format"}
DATE_KEYS = {"mtime": "d.mtime", "indexed_at": "d.indexed_at"}
NUMBER_KEYS = {"page": "c.metadata"}
Op = str  # "=", "glob", ">=", "<=", ">", "<"


@dataclass(frozen=True)
class Filter:
    """One condition. `value` is text for text and metadata keys (as written), epoch seconds
    for mtime, UTC ISO text for indexed_at and a number for page."""

    key: str
    op: Op
    value: Any

    def __str__(self) -> str:
        return f"{self.key}{'=' if self.op == 'glob' else self.op}{self.value}"


@dataclass(frozen=True)
class Access:
    """Who is asking: a person's id and groups. Applied as one more filter, inside retrieval and
    every listing, so a search that may read 1% of the index still finds k passages there."""

    user: str
    groups: tuple[str, ...] = ()


def access_filter(access: Access, collections: dict[str, str], default: str) -> Filter:
    """The filter that keeps what `access` may read: documents whose access list is "public",
    names the user or one of the groups; documents with no list where their collection is
    public (`collections`, else `default`). A private collection's unlisted documents, and a
    list naming nobody asking, match nothing: fail closed."""
    listed = tuple(sorted(name for name, kind in collections.items() if kind != default))
    return Filter("acl", "access", (access.user, tuple(sorted(set(access.groups))), default, listed))


def _access_sql(value: tuple[str, tuple[str, ...], str, tuple[str, ...]], params: list[Any]) -> str:
    user, groups, default, listed = value
    arms = ["json_extract(d.metadata, '$.acl') = 'public'",
            "(json_type(d.metadata, '$.acl') = 'object' AND EXISTS (SELECT 1 FROM json_each(d.metadata, "
            "'$.acl.users') WHERE value = ?))"]
    params.append(user)
    if groups:
        arms.append("(json_type(d.metadata, '$.acl') = 'object' AND EXISTS (SELECT 1 FROM json_each(d.metadata, "
                    f"'$.acl.groups') WHERE value IN ({', '.join('?' * len(groups))})))")
        params.extend(groups)
    # No list: the collection's default (`listed` are those whose default differs from `default`).
    inside = f"d.collection IN ({', '.join('?' * len(listed))})" if listed else "0"
    visible = f"NOT ({inside})" if default == "public" else inside
    arms.append(f"(json_type(d.metadata, '$.acl') IS NULL AND {visible})")
    params.extend(listed)
    return "(" + " OR ".join(arms) + ")"


def _number(text: str) -> float | None:
    return float(text) if _NUMBER.fullmatch(text) else None


def _moment(text: str) -> datetime | None:
    if not _ISO_DATE.match(text):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _typed(key: str, text: str, expression: str) -> Any:
    """The value as its key's type; a value that is not of it is an error (a filter that
    silently matches nothing looks like an empty knowledge base)."""
    if key == "mtime":
        number, moment = _number(text), _moment(text)
        if number is None and moment is None:
            raise ConfigError(f"--filter {expression!r}: mtime is a date; compare it with YYYY-MM-DD (optionally "
                              "with a time) or epoch seconds, e.g. mtime>=2026-01-01")
        return number if number is not None else moment.timestamp()  # type: ignore[union-attr]
    if key == "indexed_at":
        moment = _moment(text)
        if moment is None:
            raise ConfigError(f"--filter {expression!r}: indexed_at is a date; compare it with YYYY-MM-DD "
                              "(optionally with a time), e.g. indexed_at>=2026-01-01")
        # The form indexed_at is stored in (rag.index.manifest.utc_now), so text order is time order.
        return moment.astimezone(timezone.utc).isoformat(timespec="seconds")
    if key in NUMBER_KEYS:
        number = _number(text)
        if number is None:
            raise ConfigError(f"--filter {expression!r}: {key} is a number; e.g. {key}=3 or {key}=2..5")
        return number
    if key not in TEXT_KEYS and _ISO_DATE.match(text) and _moment(text) is None:
        # Dates in metadata compare as their ISO text; a date that cannot be is a typo, not an id.
        raise ConfigError(f"--filter {expression!r}: {text!r} is not a valid date; use YYYY-MM-DD")
    return text


def _checked_glob(key: str, pattern: str, expression: str) -> str:
    """The pattern in SQLite's own syntax (`[!` becomes `[^`), refused when a set is never closed
    (SQLite would match nothing) or the key is not text."""
    if key in DATE_KEYS or key in NUMBER_KEYS:
        raise ConfigError(f"--filter {expression!r}: {key} is a {'date' if key in DATE_KEYS else 'number'}, "
                          f"which globs (* ? [) do not apply to; use a range such as {key}>=V or {key}=A..B")
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch != "[":
            out.append(ch)
            i += 1
            continue
        j = i + 1
        negate = j < len(pattern) and pattern[j] in "^!"
        if negate:
            j += 1
        if j < len(pattern) and pattern[j] == "]":
            j += 1  # a ']' first in the set is itself
        end = pattern.find("]", j)
        if end < 0:
            raise ConfigError(f"--filter {expression!r}: the set opened by '[' at position {i + 1} is never closed "
                              "with ']'; to match a '[' itself write [[]")
        out.append("[" + ("^" if negate else "") + pattern[i + 1 + negate:end + 1])
        i = end + 1
    return "".join(out)


def parse_filter(expression: str) -> list[Filter]:
    """One `--filter` argument; a range gives two filters."""
    match = _FORM.match(expression)
    if not match or not match.group(3):
        raise ConfigError(f"--filter {expression!r}: expected KEY=VALUE, KEY>=VALUE, KEY<=VALUE, KEY>VALUE, "
                          "KEY<VALUE or KEY=FROM..TO (for example source=hr/*.md or mtime>=2026-01-01)")
    key, op, value = match.groups()
    if op == "=" and _GLOB.search(value):
        return [Filter(key, "glob", _checked_glob(key, value, expression))]
    if op == "=" and ".." in value:
        low, high = (part.strip() for part in value.split("..", 1))
        if not low and not high:
            raise ConfigError(f"--filter {expression!r}: a range needs at least one end")
        return ([Filter(key, ">=", _typed(key, low, expression))] if low else []) + (
            [Filter(key, "<=", _typed(key, high, expression))] if high else [])
    return [Filter(key, op, _typed(key, value, expression))]


def parse_filters(expressions: list[str] | tuple[str, ...] | None) -> list[Filter]:
    return [f for expression in expressions or () for f in parse_filter(expression)]


def _json_path(key: str) -> str:
    return '"' + key.replace('"', "").replace("'", "") + '"'


def _metadata_sql(f: Filter, params: list[Any]) -> str:
    """A condition on the first of the record's field, the document's and the chunk's metadata
    that holds the key (not null), compared as the type stored there."""
    name = _json_path(f.key)
    sources = ["d.metadata, '$.fields." + name + "'", "d.metadata, '$." + name + "'", "c.metadata, '$." + name + "'"]
    kind = "COALESCE(" + ", ".join(f"NULLIF(json_type({s}), 'null')" for s in sources) + ")"
    value = "CASE " + " ".join(f"WHEN NULLIF(json_type({s}), 'null') IS NOT NULL THEN json_extract({s})"
                               for s in sources) + " END"
    if f.op == "glob":
        params.append(f.value)
        return f"({kind} = 'text' AND {value} GLOB ?)"
    arms = [f"({kind} = 'text' AND {value} {f.op} ?)"]
    params.append(f.value)
    number = _number(f.value)
    if number is not None:
        arms.append(f"({kind} IN ('integer', 'real') AND {value} {f.op} ?)")
        params.append(number)
    if f.op == "=" and f.value in ("true", "false"):
        arms.append(f"({kind} = ?)")
        params.append(f.value)
    return "(" + " OR ".join(arms) + ")"


def _condition(f: Filter, params: list[Any]) -> str:
    if f.op == "access":
        return _access_sql(f.value, params)
    op = "GLOB" if f.op == "glob" else f.op
    if f.key in TEXT_KEYS:
        params.append(f.value)
        return f"{TEXT_KEYS[f.key]} {op} ?"
    if f.key in DATE_KEYS:
        params.append(f.value)
        return f"{DATE_KEYS[f.key]} {op} ?"
    if f.key in NUMBER_KEYS:
        params.append(f.value)
        path = f"c.metadata, '$.{_json_path(f.key)}'"
        return f"(json_type({path}) IN ('integer', 'real') AND json_extract({path}) {op} ?)"
    return _metadata_sql(f, params)


def to_sql(filters: list[Filter]) -> tuple[str, list[Any]]:
    """A WHERE clause over chunks `c` and documents `d`, with its parameters."""
    params: list[Any] = []
    clauses = [_condition(f, params) for f in filters]
    return " AND ".join(clauses) or "1", params


def document_matches(filters: list[Filter], columns: dict[str, Any]) -> bool:
    """Whether a document with these column values (collection, doc_id, ...: the others empty)
    would match every filter: asked of SQLite through to_sql, so a check made before anything
    is stored (may this key upload there?) means exactly what a search will."""
    where, params = to_sql(filters)
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE d (collection, doc_id, source, title, format, mtime, indexed_at, metadata)")
        conn.execute("CREATE TABLE c (metadata)")
        conn.execute("INSERT INTO d VALUES (?, ?, ?, ?, ?, ?, ?, '{}')",
                     [columns.get(k) for k in ("collection", "doc_id", "source", "title", "format", "mtime",
                                               "indexed_at")])
        conn.execute("INSERT INTO c VALUES ('{}')")
        return conn.execute(f"SELECT 1 FROM d, c WHERE {where}", params).fetchone() is not None


def exact_expression(key: str, value: str) -> str:
    """A filter expression selecting exactly this text value of a text key: the characters that
    would make it a glob or a range, or be trimmed, are written as one-character sets."""
    if re.search(r"[*?\[]|\.\.|^\s|\s$", value):
        return f"{key}=" + re.sub(r"([*?\[.\s])", r"[\1]", value)
    return f"{key}={value}"
