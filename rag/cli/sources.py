"""`rag sources list|run`: the `[[sources]]` of the config file, and their runs."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from rag.cli.common import TYPER_SETTINGS, IndexBar, IndexOpt, JsonOpt, engine_at, err, index_summary, out, \
    print_json, shown, state
from rag.errors import RagError

if TYPE_CHECKING:
    from rag.sources.settings import SourceSettings

app = typer.Typer(help="Sources declared as [[sources]] in the config file (s3://, file://, ...): their runs.",
                  **TYPER_SETTINGS)


def _declared() -> list[SourceSettings]:
    from rag.sources.settings import declared_sources

    return declared_sources(state.config_file or os.environ.get("RAG_CONFIG") or None)


def _when(moment: float | None) -> str | None:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds") if moment else None


@app.command("list")
def sources_list(index_dir: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """Each source: its URL and collection, its last run (counts, error) and its next one."""
    from rag.sources.state import SourceState

    engine, rows = engine_at(index_dir), []
    store = SourceState(engine.store.path)
    for declared in _declared():
        last, good = store.last(declared.name), store.last(declared.name, ok_only=True)
        due = declared.next_run(last.finished if last else None, time.time())
        rows.append({"name": declared.name, "url": declared.url, "collection": declared.target,
                     "every": declared.every or None, "cron": declared.cron or None, "next_run": _when(due),
                     "last_success": _when(good.finished if good else None),
                     "last_run": None if last is None else {k: v for k, v in last.__dict__.items() if k != "source"}
                     | {"started": _when(last.started), "finished": _when(last.finished)}})
    if json_out:
        print_json(rows)
        return
    if not rows:
        out.print("no sources: declare them as [[sources]] in the config file (see the README's Sources)")
    for row in rows:
        last: dict[str, Any] | None = row["last_run"]
        outcome = "never run" if last is None else (
            f"{'ok' if last['ok'] else 'FAILED'} {last['finished']}: {last['added']} added, {last['updated']} updated, "
            f"{last['deleted']} deleted" + (f" ({last['error']})" if last["error"] else ""))
        out.print(f"{shown(row['name']):<16} {shown(row['url']):<40} -> {shown(row['collection'])}; {outcome}"
                  + (f"; next {row['next_run']}" if row["next_run"] else "; on demand"))


@app.command("run")
def sources_run(
    name: Annotated[Optional[str], typer.Argument(help="The source to run (default: every one).")] = None,
    index_dir: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run sources now: only new and changed items are fetched, gone ones removed (with progress)."""
    declared = [d for d in _declared() if name is None or d.name == name]
    if not declared:
        raise RagError(f"no source named {name!r} in the config file" if name else
                       "no sources: declare them as [[sources]] in the config file")
    engine, results, failed = engine_at(index_dir), [], False
    for source in declared:
        try:
            with IndexBar() as bar:
                run = engine.index_source(source, progress=bar)
        except RagError as exc:
            failed = True
            err.print(f"source {shown(source.name)}: {exc}")
            results.append({"source": source.name, "ok": False, "error": str(exc)})
            continue
        report = run.report
        failed = failed or bool(report.failed)
        err.print(f"source {shown(source.name)}: {run.listed} listed, {run.fetched} fetched; " + index_summary(report))
        results.append({"source": source.name, "ok": not report.failed, "listed": run.listed, "fetched": run.fetched,
                        **report.as_dict()})
    if json_out:
        print_json(results)
    if failed:
        raise typer.Exit(1)
