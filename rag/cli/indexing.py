"""`rag index`, `delete`, `compact`, `check` and `info`: building an index and looking after it."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from rag.cli.common import (CollectionOpt, IndexBar, IndexOpt, JsonOpt, engine_at, err, fail, index_summary,
                            load_settings, new_engine, out, print_json, progress_bar, run_index, shown)
from rag.errors import RagError

if TYPE_CHECKING:
    from rag.cluster.ray_indexing import RayOptions
    from rag.engine import Engine
    from rag.indexing import IndexReport


ReembedOpt = Annotated[bool, typer.Option(
    "--reembed", help="Embed the whole index again with --model DIR (chunks, texts and BM25 kept), into one "
                      "new version; searches use the old one until it is done.")]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="With --reembed: the embedding model folder (a sentence-transformers folder, e.g. "
                    "`rag tune`'s output).")]


def _run_index_jsonl(engine: Engine, source: str, sync: bool, replace: bool,
                     ray: Optional[RayOptions] = None) -> IndexReport:
    with IndexBar() as bar:
        if source == "-":
            if sys.stdin is None or sys.stdin.closed:
                raise RagError("--jsonl -: standard input is closed; pipe the records in "
                               "(`export | rag index --jsonl -`) or name a file (--jsonl records.jsonl)")
            return engine.index_jsonl(sys.stdin.buffer, "stdin", bar, sync, replace=replace, ray=ray)
        path = Path(source)
        try:
            stream = path.open("rb")
            size = path.stat().st_size
        except OSError as exc:
            raise RagError(f"--jsonl {source}: cannot read it ({exc.strerror or exc})") from None
        with stream:
            return engine.index_jsonl(stream, str(path), bar, sync, size, replace=replace, ray=ray)


def _ray_options(ray: bool, address: Optional[str], workers: Optional[int],
                 retries: Optional[int]) -> Optional[RayOptions]:
    if not (ray or address or workers or retries is not None):
        return None
    from rag.cluster.ray_indexing import RayOptions

    return RayOptions(address=address, workers=workers, retries=retries)


def _watch(engine: Engine, paths: list[Path], replace: bool, ray: Optional[RayOptions], json_out: bool) -> None:
    """`index --watch`: the first run as a normal one (with --sync), then a line per batch, until
    SIGINT or SIGTERM, which end it after the current run (a second Ctrl-C interrupts it)."""
    import json
    import signal
    import threading

    from rag.indexing.watch import Waiting, WatchEvent, Watching, watch

    stop = threading.Event()

    def stopping(signum: int, _frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def report(event: WatchEvent) -> None:
        if isinstance(event, Watching):
            err.print(f"watching {', '.join(map(shown, event.folders))} (Ctrl-C to stop)")
        elif isinstance(event, Waiting):
            err.print(f"waiting: {escape(event.reason)}")
        elif json_out:  # one line per batch (JSON Lines)
            sys.stdout.write(json.dumps({"changes": [list(c) for c in event.changes], "error": event.error or None,
                                         **(event.report.as_dict() if event.report else {})}) + "\n")
            sys.stdout.flush()
        elif event.report is None:
            err.print(f"[bold red]{shown(event.describe())}: {escape(event.error)}[/]")
        else:
            what = "first run" if event.first else shown(event.describe())
            out.print(f"{what}; {event.documents_per_second():.1f} documents/s; {index_summary(event.report)}")
            if event.report.sync_stopped:
                err.print(f"[bold red]{escape(event.report.sync_stopped)}[/]")

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = watch(engine, paths, report, stop, first=lambda: run_index(engine, paths, True, replace, ray),
                       replace=replace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result.unindexed:
        err.print(f"stopped while the index was locked: {len(result.unindexed)} changes not indexed; "
                  f"`rag index --sync` takes them")


def index(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Files or folders to index.")] = None,
    index_dir: IndexOpt = None,
    json_out: JsonOpt = False,
    jsonl: Annotated[Optional[str], typer.Option("--jsonl", help="Read records {id, text, metadata} from this "
                                                 "JSON Lines file, or - for standard input, as a stream.")] = None,
    sync: Annotated[bool, typer.Option("--sync", help="Also remove indexed documents that are no longer there.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any file is skipped, too.")] = False,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Embedding batch size.")] = None,
    factory: Annotated[Optional[str], typer.Option("--factory", help="FAISS index type for a new index.")] = None,
    collection: CollectionOpt = None,
    replace: Annotated[bool, typer.Option("--replace", help="Let these documents replace same-id documents of "
                                          "the collection that were read from other files.")] = False,
    max_delete: Annotated[Optional[float], typer.Option(
        "--max-delete", min=0, max=1, help="With --sync: the largest share of the synced documents it may "
                                           "delete (default: index.sync_max_delete).")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Read, chunk and embed on a Ray cluster (a local one "
                                      "unless --ray-address); needs pip install 'rag[ray]'.")] = False,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="The Ray cluster to run on (e.g. ray://head:10001, or auto); implies --ray.")] = None,
    ray_workers: Annotated[Optional[int], typer.Option(
        "--ray-workers", min=1, help="Embedding workers (default: one per GPU, else one per 4 CPUs); implies --ray.")] = None,
    ray_retries: Annotated[Optional[int], typer.Option(
        "--ray-retries", min=0, help="Restarts of a worker that dies (default: without limit); implies --ray.")] = None,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Then keep watching the folders and index their changes within seconds, one --sync "
                        "run per burst of changes (implies --sync; --ray applies to the first run); "
                        "Ctrl-C or SIGTERM stops after the current run.")] = False,
    reembed: ReembedOpt = False,
    model: ModelOpt = None,
) -> None:
    """Index documents (new and changed ones; unchanged ones cost nothing)."""
    if reembed or model is not None:
        _reembed(index_dir, model, batch_size, json_out, bool(paths or jsonl or watch or sync))
    if bool(paths) == (jsonl is not None):
        raise fail("give PATH... to index files, or --jsonl FILE (- for standard input), not both", 2)
    if watch and jsonl is not None:
        raise fail("--watch watches folders; it cannot watch --jsonl", 2)
    on_ray = _ray_options(ray, ray_address, ray_workers, ray_retries)
    settings, _ = load_settings({"index.path": index_dir, "embedding.batch_size": batch_size,
                                 "index.factory": factory, "ingest.collection": collection,
                                 "index.sync_max_delete": max_delete})
    engine = new_engine(settings)
    if watch:
        _watch(engine, paths or [], replace, on_ray, json_out)
        raise typer.Exit(0)
    if jsonl is not None:
        report = _run_index_jsonl(engine, jsonl, sync, replace, on_ray)
    else:
        report = run_index(engine, paths or [], sync, replace, on_ray)
    if json_out:
        print_json(report.as_dict())
    else:
        out.print(index_summary(report))
    if report.sync_stopped:
        err.print(f"[bold red]{escape(report.sync_stopped)}[/]")
    if report.documents + report.unchanged + report.deleted == 0 and not report.failed:
        err.print("nothing was indexed: no supported documents found")
    raise typer.Exit(report.exit_code(strict))


class ReembedBar(IndexBar):
    """Re-embedding progress: chunks done, chunks/s and ETA."""

    def start(self, total_bytes: int, files: int) -> None:
        self.total_bytes, self.started = total_bytes, time.perf_counter()
        if err.is_terminal:
            self._bar = progress_bar("re-embedding", "{task.fields[chunks]} chunks · {task.fields[rate]} chunks/s")
            self._task = self._bar.add_task("reembed", total=total_bytes or None, chunks=0, rate="-")
            self._bar.start()
        else:
            err.print(f"re-embedding {total_bytes} chunks")

    def _rate(self) -> float:
        return self.chunks / max(time.perf_counter() - self.started, 1e-6)

    def _plain_line(self) -> None:
        now = time.perf_counter()
        if now - self._last_line < 10 or not self.total_bytes:
            return
        self._last_line = now
        fraction = self.done_bytes / self.total_bytes
        eta = f"{(now - self.started) * (1 - fraction) / fraction:.0f} s" if fraction > 0 else "-"
        err.print(f"  {fraction:6.1%}  {self.chunks} chunks, {self._rate():.1f} chunks/s, ETA {eta}")


def _reembed(index_dir: Optional[Path], model: Optional[str], batch_size: Optional[int], json_out: bool,
             other: bool) -> None:
    """`rag index --reembed --model DIR`: one new version with every vector made by that model."""
    if not model or other:
        raise fail("--reembed needs --model DIR, and no PATH, --jsonl, --sync or --watch", 2)
    settings, _ = load_settings({"index.path": index_dir, "embedding.batch_size": batch_size})
    with ReembedBar() as bar:
        version = new_engine(settings).reembed(model, progress=bar)
    folder = str(Path(model).expanduser().resolve()) if Path(model).expanduser().is_dir() else model
    if json_out:
        print_json({"version": version, "chunks": bar.chunks, "model": folder})
    else:
        out.print(f"re-embedded {bar.chunks} chunks with {escape(folder)} into version {version}")
        err.print(f"searches now need the new model: set embedding.model = {escape(repr(folder))}")
    raise typer.Exit(0)


def delete(
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids (as `rag search --json` shows them).")],
    index_dir: IndexOpt = None,
    collection: Annotated[Optional[str], typer.Option(
        "--collection", "-c", help="The collection the ids belong to (needed when an id is in several).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove documents from the index (one atomic new version)."""
    settings, _ = load_settings({"index.path": index_dir, "ingest.collection": collection})  # validates the name
    deleted, missing = new_engine(settings).delete(doc_ids, collection)
    if json_out:
        print_json({"deleted": deleted, "not_found": missing})
    else:
        out.print(f"{len(deleted)} documents deleted")
        for doc_id in missing:
            err.print(f"[bold red]not found:[/] {shown(doc_id)} (see `rag search --json` for document ids)")
    raise typer.Exit(1 if missing else 0)


def compact(index_dir: IndexOpt = None) -> None:
    """Merge every segment of the index into one, dropping the vectors of deleted chunks."""
    dropped = engine_at(index_dir).compact()
    out.print(f"segments merged into one; {dropped} vectors of deleted or replaced chunks dropped" if dropped
              else "nothing to compact")


def check(index_dir: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """Verify an index: checksums, FAISS ids against chunk rows, the manifest's counts."""
    settings, _ = load_settings({"index.path": index_dir})
    problems = new_engine(settings).check().problems
    if json_out:
        print_json({"ok": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            err.print(f"[bold red]problem:[/] {escape(problem)}")
    else:
        out.print(f"index {shown(settings.index.path)} is sound")
    raise typer.Exit(1 if problems else 0)


def info(index_dir: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """Show an index's manifest, counts and size on disk."""
    data = engine_at(index_dir).info()
    if json_out:
        print_json(asdict(data))
        return
    m = data.manifest
    out.print(f"index      {shown(data.path)} ({data.version}, format {m['format_version']})")
    out.print(f"documents  {m['counts']['documents']}"
              + (" (" + ", ".join(f"{shown(c)} {n}" for c, n in data.collections.items()) + ")"
                 if len(data.collections) > 1 else ""))
    out.print(f"chunks     {m['counts']['chunks']} (vectors {m['counts']['vectors']})")
    if data.segments:
        out.print(f"segments   {len(data.segments)} ("
                  + ", ".join(f"{s.name} {s.chunks} rows" for s in data.segments) + ")")
    if data.masked:
        out.print(f"deleted    {data.masked} vectors of deleted or replaced chunks still on disk, skipped by "
                  f"searches ({data.masked / max(m['counts']['vectors'], 1):.1%}); merges and `rag compact` "
                  "drop them")
    out.print(f"size       {data.disk_bytes / 2**20:.2f} MB on disk "
              + ", ".join(f"{k} {v / 2**20:.2f} MB" for k, v in data.files.items()))
    e = m["embedding"]
    ran = f", last written by {e['backend']} in {e['precision']}" if "precision" in e else ""
    out.print(f"embedding  {shown(e['model'])} (dim {e['dimension']}, normalized {e['normalize']}, "
              f"max {e['max_seq_length']} tokens{ran})")
    c = m["chunking"]
    out.print(f"chunking   {c['chunk_size']} tokens, overlap {c['chunk_overlap']}, heading prefix {c['heading_prefix']}")
    out.print(f"faiss      {shown(m['index']['factory'])} ({m['index']['metric']}, faiss {m['index'].get('faiss_version')})")
    out.print(f"created    {m['created_at']}   updated {m['updated_at']}")
