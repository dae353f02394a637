"""JSON and JSON Lines: one record per document, with configurable id, text and title fields."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from rag.config import IngestSettings
from rag.errors import IngestError, RagError, SkipDocument
from rag.ingest.acl import access_list
from rag.ingest.text import normalize_whitespace
from rag.records import Document, Section


def _scalar_metadata(record: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in skip and v is not None}


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "true/false", float: "a number with a fraction",
            type(None): "null"}.get(type(value), type(value).__name__)


def json_error(exc: json.JSONDecodeError, line: str) -> str:
    """What is wrong with one line of JSON, its column counted in characters of that line."""
    message = exc.msg.removesuffix(" at").rstrip(":")
    if message.startswith("Unterminated string"):
        return f"not valid JSON: the line ends inside a string that starts at column {exc.pos + 1}"
    if exc.pos >= len(line.rstrip()):
        return f"not valid JSON: the line ends before the record does ({message})"
    return f"not valid JSON: {message} at column {exc.pos + 1}"


# Python's JSON reader and writer recurse once per level and stop near 1,000 levels, sooner the
# deeper the caller's stack: a record past that is refused with this, wherever it failed.
_TOO_DEEP = ("arrays and objects nested too deeply to read (Python's JSON reader stops near 1,000 levels); "
             "flatten the data")


def _nesting_over(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels deep; iterative, so any depth is safe."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _record_id(value: Any, field: str, default: str, where: str) -> str:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
        raise IngestError(f"field '{field}' must be a string or a whole number, got {_json_type(value)}; "
                          f"give each record a text id, or set ingest.json_id_field to the field that holds it",
                          where)
    return default if value is None or str(value).strip() == "" else str(value).strip()


def record_to_document(
    record: Any, where: str, default_id: str, source: str, settings: IngestSettings, mtime: float | None,
    size: int = 0, origin: str = "",
) -> Document:
    """A record as a Document; `where` names the file and line for error messages."""
    if not isinstance(record, dict):
        raise IngestError(f"expected a JSON object, got {_json_type(record)}", where)
    if _nesting_over(record, settings.max_nesting_depth):
        raise IngestError(f"arrays and objects nested over {settings.max_nesting_depth} levels deep, past "
                          f"ingest.max_nesting_depth; flatten the record, or raise ingest.max_nesting_depth "
                          f"(RAG_INGEST_MAX_NESTING_DEPTH)", where)
    text_field, id_field, title_field = settings.json_text_field, settings.json_id_field, settings.json_title_field
    if text_field not in record:
        raise IngestError(
            f"no '{text_field}' field (fields: {', '.join(sorted(record)) or 'none'}); "
            f"set ingest.json_text_field (RAG_INGEST_JSON_TEXT_FIELD) to the field that holds the text",
            where,
        )
    raw_text = record[text_field]
    if not isinstance(raw_text, str):
        raise IngestError(f"field '{text_field}' must be a string, got {type(raw_text).__name__}", where)
    text = normalize_whitespace(raw_text)
    if not text:
        raise SkipDocument(f"empty '{text_field}'", where)
    doc_id = _record_id(record.get(id_field), id_field, default_id, where)
    title = record.get(title_field)
    title = str(title).strip() if title not in (None, "") else None
    metadata = _scalar_metadata(record, {text_field, id_field, title_field, "metadata"})
    nested = record.get("metadata")
    if isinstance(nested, dict):  # the batch format: {"id", "text", "metadata": {...}}
        metadata.update(_scalar_metadata(nested, set()))
    elif nested is not None:
        metadata["metadata"] = nested
    acl = access_list(metadata.pop("acl"), where) if "acl" in metadata else None
    try:
        # The access list is not content: a record whose list alone changed keeps its hash, and
        # the run rewrites only its rows (decision acl_changed), embedding nothing again.
        canonical = json.dumps({"text": text, "title": title, "metadata": metadata}, sort_keys=True,
                               ensure_ascii=False, allow_nan=False)
    except ValueError:  # stored, NaN or Infinity would break every filter over metadata (not JSON)
        raise IngestError("a metadata number is NaN or Infinity, which JSON has not; write null or a finite "
                          "number", where) from None
    # The title as a heading: prepended to what every chunk embeds, not a chunk of its own.
    sections = [Section(text=text, headings=(title,) if title else ())]
    return Document(
        doc_id=doc_id,
        sections=sections,
        metadata={
            "source": source,
            "title": title or doc_id,
            "mtime": mtime,
            "sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
            "format": "record",
            "fields": metadata,
            **({"acl": acl} if acl is not None else {}),
        },
        size=size,
        where=where,
        origin=origin,
    )


def iter_jsonl_lines(lines: Iterable[bytes], rel: str, source: str, settings: IngestSettings,
                     mtime: float | None, origin: str = "", whole_lines: bool = False) -> Iterator[Document | RagError]:
    """One document per line of a JSON Lines stream (a file, or standard input), one line in memory.

    With `whole_lines`, a last line without its newline is an error: a producer killed
    mid-stream leaves one, and a `--sync` must not trust such a stream.
    """
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{rel} line {lineno}"
        if whole_lines and not raw.endswith(b"\n"):
            yield IngestError("the last line has no newline, so the stream may have been cut short; this record is "
                              "not indexed and --sync deletes nothing. End every record with a newline.", where)
            continue
        try:
            line = raw.decode("utf-8-sig").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            yield IngestError(f"not UTF-8 text (byte {exc.start + 1} of the line)", where)
            continue
        try:
            record = json.loads(line)
            yield record_to_document(record, where, f"{rel}#{lineno}", source, settings, mtime, len(raw), origin)
        except json.JSONDecodeError as exc:
            yield IngestError(json_error(exc, line), where)
        except RecursionError:
            yield IngestError(_TOO_DEEP, where)
        except RagError as exc:
            yield exc


def iter_json_records(
    path: Path, rel: str, source: str, settings: IngestSettings, mtime: float | None, origin: str = ""
) -> Iterator[Document | RagError]:
    """Documents of a .jsonl file read line by line (bounded memory), or of a .json array."""
    if path.suffix.lower() == ".jsonl":
        with path.open("rb") as fh:
            yield from iter_jsonl_lines(fh, rel, source, settings, mtime, origin)
        return
    data = path.read_bytes()
    if not data.strip():
        yield SkipDocument("empty file")
        return
    try:
        payload = json.loads(data.decode("utf-8-sig"))
    except json.JSONDecodeError as exc:
        yield IngestError(f"not valid JSON: {exc.msg.removesuffix(' at')} at line {exc.lineno} column {exc.colno}")
        return
    except UnicodeDecodeError as exc:
        yield IngestError(f"not UTF-8 text (byte {exc.start + 1})")
        return
    except RecursionError:
        yield IngestError(_TOO_DEEP)
        return
    if isinstance(payload, dict) and settings.json_text_field not in payload:
        # A wrapper object such as {"data": [...]}: take its only list of records.
        lists = [v for v in payload.values() if isinstance(v, list)]
        if len(lists) == 1:
            payload = lists[0]
    records = payload if isinstance(payload, list) else [payload]
    share = len(data) // max(len(records), 1)
    for number, record in enumerate(records):
        try:
            yield record_to_document(record, f"{rel} record {number}", f"{rel}#{number}", source, settings, mtime,
                                     share, origin)
        except RecursionError:
            yield IngestError(_TOO_DEEP, f"{rel} record {number}")
        except RagError as exc:
            yield exc
