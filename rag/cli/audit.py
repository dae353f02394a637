"""`rag audit export`: the service's audit log (serve.audit), who asked what and when, for an
administrator or an auditor. What it prints is personal data."""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Annotated, Optional, TextIO

import typer

from rag.cli.common import TYPER_SETTINGS, IndexOpt, err, load_settings
from rag.errors import RagError

app = typer.Typer(help="The service's audit log (serve.audit = true): who asked what, and when. Personal data.",
                  **TYPER_SETTINGS)

_WHEN = ("an ISO date or time, UTC unless it names its zone (2026-01-31, 2026-01-31T09:00, "
         "2026-01-31T09:00+01:00), or a duration back from now (90m, 12h, 7d, 2w)")
SinceOpt = Annotated[Optional[str], typer.Option("--since", help=f"Records from this time on: {_WHEN}.")]
UntilOpt = Annotated[Optional[str], typer.Option("--until", help=f"Records before this time: {_WHEN}.")]
FormatOpt = Annotated[str, typer.Option(
    "--format", help="jsonl (one object per line) or csv (a header row; groups and cited as JSON lists; a cell "
                     "a spreadsheet would run as a formula starts with ').")]
FORMATS = ("jsonl", "csv")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def moment(value: str, option: str, now: datetime) -> datetime:
    """The time an option names (see _WHEN), in UTC; a clear RagError for anything else."""
    text = value.strip()
    duration = _DURATION.fullmatch(text.lower())
    if duration:
        return now - timedelta(**{_UNITS[duration[2]]: float(duration[1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise RagError(f"{option} {value!r}: give {_WHEN}") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def write_jsonl(records: Iterable[dict[str, object]], out: TextIO) -> int:
    written = 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        written += 1
    return written


def _cell(value: object) -> object:
    """A CSV cell: lists as JSON, and text that a spreadsheet would run as a formula (a question
    is anyone's text) made inert with a leading apostrophe."""
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def write_csv(records: Iterable[dict[str, object]], out: TextIO) -> int:
    from rag.serve.audit import FIELDS

    writer = csv.writer(out)
    writer.writerow(FIELDS)
    written = 0
    for record in records:
        writer.writerow([_cell(record[name]) for name in FIELDS])
        written += 1
    return written


@app.command("export")
def audit_export(since: SinceOpt = None, until: UntilOpt = None, index_dir: IndexOpt = None,
                 fmt: FormatOpt = "jsonl") -> None:
    """Write the audit log's records to stdout, oldest first: when, the request id, the key's name,
    the user and groups, method, route, status, question, the documents cited or returned and the
    client's address. Records older than serve.audit_days are never written."""
    from rag.serve.audit import AuditLog, audit_path

    if fmt not in FORMATS:
        raise RagError(f"--format {fmt!r}: use {' or '.join(FORMATS)}")
    now = datetime.now(timezone.utc)
    start = moment(since, "--since", now) if since else None
    end = moment(until, "--until", now) if until else None
    if start and end and start >= end:
        raise RagError(f"--since {since} is not before --until {until}: no record can be in between")
    settings = load_settings({"index.path": index_dir})[0]
    log = AuditLog(audit_path(settings.index.path, settings.serve.audit_file), settings.serve.audit_days)
    written = (write_csv if fmt == "csv" else write_jsonl)(log.export(start, end), sys.stdout)
    sys.stdout.flush()
    err.print(f"{written} audit record{'s' if written != 1 else ''} written"
              + ("" if settings.serve.audit else " (serve.audit is off: none are being added)"))
