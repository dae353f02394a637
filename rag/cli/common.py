"""What every command shares: the consoles, option aliases, the settings and engine of a command,
JSON output, errors, and the one progress-bar factory.

Nothing heavy is imported here at module level (the engine and its models, pydantic settings,
rich's progress bars): `rag --help` imports this module, and costs the interpreter, typer and the
command modules, about 0.1 s instead of 0.5 s.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from rag.errors import RagError

if TYPE_CHECKING:
    from rich.progress import Progress

    from rag.cluster.ray_indexing import RayOptions
    from rag.config import Settings
    from rag.engine import Engine
    from rag.indexing import IndexReport, Problem

# rich_markup_mode=None: click's plain help. Typer's rich help imports rich's markdown and
# syntax highlighting (~90 ms), which would be most of the time `rag --help` takes.
TYPER_SETTINGS: dict[str, Any] = {"no_args_is_help": True, "rich_markup_mode": None,
                                  "pretty_exceptions_enable": False}

# No emoji codes: a file called ":fire:.md" is shown as it is named.
out = Console(soft_wrap=True, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)
# Control characters in ids, paths and titles are shown escaped, so one value stays on one line.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7f]} | {0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t"}


def shown(value: Any) -> str:
    """Text a user or a file supplied, safe to print: markup escaped, control characters visible."""
    return escape(str(value).translate(_CONTROL))


class _State:
    config_file: Optional[Path] = None


state = _State()

# -- option aliases --------------------------------------------------------------------------------

IndexOpt = Annotated[Optional[Path], typer.Option("--index", help="Index folder (default: index.path in config).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
CollectionOpt = Annotated[Optional[str], typer.Option(
    "--collection", "-c", help="The collection: documents are (collection, id), so two sources in two "
                               "collections never replace each other (default: ingest.collection).")]
ModeOpt = Annotated[Optional[str], typer.Option("--mode", help="hybrid, dense or bm25 (default: search.mode).")]
TopKOpt = Annotated[Optional[int], typer.Option("-k", "--top-k", help="Passages to retrieve.", min=1)]
GeneratorOpt = Annotated[Optional[str], typer.Option("--generator", "-g",
                                                     help="local, openai or extractive (default: answer.generator).")]
NoLlmOpt = Annotated[bool, typer.Option("--no-llm", help="Answer without an LLM: the best sentence, cited.")]
FilterOpt = Annotated[Optional[list[str]], typer.Option(
    "--filter", "-f", help="KEY=VALUE (repeatable): glob on source (source=hr/*), ranges (mtime>=2026-01-01, "
                           "page=2..5), any metadata key.")]

# -- errors and output -----------------------------------------------------------------------------


def print_error(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error and return the exit to raise: `raise fail("...", 2)` for a usage error.

    A RagError needs none of this: `main()` prints it the same way and exits 1."""
    print_error(message)
    return typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


# -- settings and the engine of a command ----------------------------------------------------------


def load_settings(overrides: dict[str, Any]) -> tuple[Settings, dict]:
    """The settings for these flags (None: not given), with --config; and where each came from."""
    from rag.config import load_settings as load

    return load(state.config_file, overrides)


def new_engine(settings: Settings) -> Engine:
    from rag.engine import Engine

    return Engine(settings)


def engine_at(index_dir: Optional[Path]) -> Engine:
    """The engine of --index (or index.path), the index not built if it is missing."""
    settings, _ = load_settings({"index.path": index_dir})
    return new_engine(settings)


def engine_for_reading(overrides: dict[str, Any]) -> Engine:
    """An engine whose index exists; the default index is built from corpus.path on first use."""
    settings, origins = load_settings(overrides)
    engine = new_engine(settings)
    if not engine.store.exists() and origins["index.path"].layer != "flag":
        corpus = settings.corpus.path
        if corpus.is_dir():
            err.print(f"No index at {shown(settings.index.path)} yet: building it from {shown(corpus)}/ first.")
            report = run_index(engine, [corpus])
            err.print(index_summary(report))
            if report.exit_code() != 0 and not engine.store.exists():
                raise RagError(f"could not build the index from {corpus}")
    return engine


# -- progress --------------------------------------------------------------------------------------


def progress_bar(verb: str, detail: str) -> Progress:
    """The one progress bar: "VERB [bar] 42% DETAIL 0:01:05" on stderr, shown on a terminal only.

    `detail` is a rich format string over the task ({task.completed}, {task.fields[rate]}...)."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(f"[bold]{verb}"), BarColumn(), TaskProgressColumn(), TextColumn(detail),
                    TimeRemainingColumn(), console=err, disable=not err.is_terminal)


class IndexBar:
    """Indexing progress: the bar on a terminal; a plain line every few seconds otherwise (CI logs, pipes)."""

    def __init__(self) -> None:
        self.documents = 0
        self.chunks = 0
        self.done_bytes = 0
        self.total_bytes = 0
        self.ocr_pages = 0
        self.started = time.perf_counter()
        self._last_line = self.started
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> "IndexBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, total_bytes: int, files: int) -> None:
        # 0: a stream of unknown length (standard input); progress without an ETA.
        self.total_bytes = total_bytes
        self.started = time.perf_counter()
        if err.is_terminal:
            self._bar = progress_bar("indexing", "{task.fields[docs]} docs · {task.fields[chunks]} chunks · "
                                                 "{task.fields[rate]} docs/s{task.fields[ocr]} ETA")
            self._task = self._bar.add_task("index", total=self.total_bytes or None, docs=0, chunks=0, rate="-",
                                            ocr="")
            self._bar.start()
        elif self.total_bytes:
            err.print(f"indexing {files} files ({self.total_bytes / 2**20:.1f} MB)")
        else:
            err.print("indexing a stream of records")

    def _rate(self) -> float:
        return self.documents / max(time.perf_counter() - self.started, 1e-6)

    def advance(self, nbytes: int, documents: int, chunks: int) -> None:
        self.done_bytes += nbytes
        self.documents += documents
        self.chunks += chunks
        if self._bar is not None:
            self._bar.update(self._task, advance=nbytes, docs=self.documents, chunks=self.chunks,
                             rate=f"{self._rate():.1f}")
            return
        self._plain_line()

    def _plain_line(self) -> None:
        """Where there is no bar (a pipe, a CI log): a line every 10 seconds at most."""
        now = time.perf_counter()
        if now - self._last_line < 10:
            return
        self._last_line = now
        if not self.total_bytes:
            err.print(f"  {self.documents} docs, {self.chunks} chunks, {self._rate():.1f} docs/s{self._ocr()}")
            return
        fraction = self.done_bytes / self.total_bytes
        eta = f"{(now - self.started) * (1 - fraction) / fraction:.0f} s" if fraction > 0 else "-"
        err.print(f"  {fraction:6.1%}  {self.documents} docs, {self.chunks} chunks, "
                  f"{self._rate():.1f} docs/s{self._ocr()}, ETA {eta}")

    def _ocr(self) -> str:
        if not self.ocr_pages:
            return ""
        return f" · {self.ocr_pages} pages OCR'd, {self.ocr_pages / max(time.perf_counter() - self.started, 1e-6):.2f}/s"

    def ocr_page(self, seconds: float) -> None:
        """A scanned page read: a 200-page scan is one file, so the bar counts its pages."""
        self.ocr_pages += 1
        if self._bar is not None:
            self._bar.update(self._task, ocr=self._ocr())
            return
        self._plain_line()

    def problem(self, problem: Problem) -> None:
        label = "[yellow]skipped[/]" if problem.kind == "skipped" else "[bold red]failed[/]"
        err.print(f"{label} {shown(problem.path)}: {escape(problem.reason)}")


def index_summary(report: IndexReport) -> str:
    return (f"{report.documents} documents indexed ({report.added} new, {report.updated} changed, "
            f"{report.unchanged} unchanged, {report.deleted} deleted"
            + (f", {report.deduplicated} stored once with identical content" if report.deduplicated else "")
            + (f", {report.acl_changed} access lists updated" if report.acl_changed else "")
            + f"), {report.chunks} chunks, {report.skipped} skipped, "
            f"{report.failed} failed in {report.seconds:.1f} s"
            + (f" ({report.ocr_pages} pages read by OCR in {report.ocr_seconds:.1f} s)" if report.ocr_pages else "")
            + f" -> {shown(report.index)}"
            + (f" (collection {shown(report.collection)}, {report.version})" if report.version else ""))


def run_index(engine: Engine, paths: list[Path], sync: bool = False, replace: bool = False,
              ray: Optional[RayOptions] = None) -> IndexReport:
    with IndexBar() as bar:
        return engine.index(paths, progress=bar, sync=sync, replace=replace, ray=ray)
