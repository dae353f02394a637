"""The `rag` command: translates flags to settings, calls the Engine, prints the result."""

from __future__ import annotations

import json
from dataclasses import asdict
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from rag.errors import RagError
from rag.filters import parse_filters

# Everything heavier (the engine and its models, pydantic settings, rich's progress bars and
# tables) is imported by the command that needs it: `rag --help` costs the interpreter, typer
# and this file, about 0.1 s instead of 0.5 s.
if TYPE_CHECKING:
    from rich.progress import Progress

    from rag.answer import Answer
    from rag.cluster.ray_indexing import RayOptions
    from rag.config import Settings
    from rag.engine import Engine
    from rag.indexing import IndexReport, Problem
    from rag.serve.feedback import FeedbackStore
    from rag.serve.keys import KeyStore

# rich_markup_mode=None: click's plain help. Typer's rich help imports rich's markdown and
# syntax highlighting (~90 ms), which would be most of the time `rag --help` takes.
_TYPER = {"no_args_is_help": True, "rich_markup_mode": None, "pretty_exceptions_enable": False}
app = typer.Typer(
    name="rag",
    help="Retrieval-augmented question answering over your own documents.",
    add_completion=False,
    **_TYPER,
)
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

IndexOpt = Annotated[Optional[Path], typer.Option("--index", help="Index folder (default: index.path in config).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


@app.callback()
def _main(
    config: Annotated[Optional[Path], typer.Option("--config", help="A TOML file overriding config.toml.",
                                                    envvar="RAG_CONFIG")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each stage does.")] = False,
) -> None:
    state.config_file = config
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("faiss", "sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings(overrides: dict[str, Any]) -> tuple[Settings, dict]:
    from rag.config import load_settings

    return load_settings(state.config_file, overrides)


def _new_engine(settings: Settings) -> Engine:
    from rag.engine import Engine

    return Engine(settings)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


class _ProgressBar:
    """A rich bar on a terminal; a plain line every few seconds otherwise (CI logs, pipes)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.documents = 0
        self.chunks = 0
        self.done_bytes = 0
        self.total_bytes = 0
        self.started = time.perf_counter()
        self._last_line = self.started
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, total_bytes: int, files: int) -> None:
        # 0: a stream of unknown length (standard input); progress without an ETA.
        self.total_bytes = total_bytes
        self.started = time.perf_counter()
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]indexing"), BarColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[docs]} docs · {task.fields[chunks]} chunks · {task.fields[rate]} docs/s"),
                TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False,
            )
            self._task = self._bar.add_task("index", total=self.total_bytes or None, docs=0, chunks=0, rate="-")
            self._bar.start()
        elif self.total_bytes:
            self.console.print(f"indexing {files} files ({self.total_bytes / 2**20:.1f} MB)")
        else:
            self.console.print("indexing a stream of records")

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
        now = time.perf_counter()
        if now - self._last_line >= 10 and not self.total_bytes:
            self._last_line = now
            self.console.print(f"  {self.documents} docs, {self.chunks} chunks, {self._rate():.1f} docs/s")
        elif now - self._last_line >= 10:
            self._last_line = now
            fraction = self.done_bytes / self.total_bytes
            eta = f"{(now - self.started) * (1 - fraction) / fraction:.0f} s" if fraction > 0 else "-"
            self.console.print(f"  {fraction:6.1%}  {self.documents} docs, {self.chunks} chunks, "
                               f"{self._rate():.1f} docs/s, ETA {eta}")

    def problem(self, problem: Problem) -> None:
        label = "[yellow]skipped[/]" if problem.kind == "skipped" else "[bold red]failed[/]"
        self.console.print(f"{label} {shown(problem.path)}: {escape(problem.reason)}")


def _summary(report: IndexReport) -> str:
    return (f"{report.documents} documents indexed ({report.added} new, {report.updated} changed, "
            f"{report.unchanged} unchanged, {report.deleted} deleted"
            + (f", {report.deduplicated} stored once with identical content" if report.deduplicated else "")
            + f"), {report.chunks} chunks, {report.skipped} skipped, "
            f"{report.failed} failed in {report.seconds:.1f} s -> {shown(report.index)}"
            + (f" (collection {shown(report.collection)}, {report.version})" if report.version else ""))


def _run_index(engine: Engine, paths: list[Path], sync: bool = False, replace: bool = False,
               ray: Optional[RayOptions] = None) -> IndexReport:
    with _ProgressBar(err) as bar:
        return engine.index(paths, progress=bar, sync=sync, replace=replace, ray=ray)


def _run_index_jsonl(engine: Engine, source: str, sync: bool, replace: bool,
                     ray: Optional[RayOptions] = None) -> IndexReport:
    with _ProgressBar(err) as bar:
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


CollectionOpt = Annotated[Optional[str], typer.Option(
    "--collection", "-c", help="The collection: documents are (collection, id), so two sources in two "
                               "collections never replace each other (default: ingest.collection).")]
ModeOpt = Annotated[Optional[str], typer.Option("--mode", help="hybrid, dense or bm25 (default: search.mode).")]
FilterOpt = Annotated[Optional[list[str]], typer.Option(
    "--filter", "-f", help="KEY=VALUE (repeatable): glob on source (source=hr/*), ranges (mtime>=2026-01-01, "
                           "page=2..5), any metadata key.")]


@app.command()
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
) -> None:
    """Index documents (new and changed ones; unchanged ones cost nothing)."""
    if bool(paths) == (jsonl is not None):
        raise _fail("give PATH... to index files, or --jsonl FILE (- for standard input), not both", 2)
    on_ray = None
    if ray or ray_address or ray_workers or ray_retries is not None:
        from rag.cluster.ray_indexing import RayOptions

        on_ray = RayOptions(address=ray_address, workers=ray_workers, retries=ray_retries)
    try:
        settings, _ = _settings({"index.path": index_dir, "embedding.batch_size": batch_size,
                                 "index.factory": factory, "ingest.collection": collection,
                                 "index.sync_max_delete": max_delete})
        engine = _new_engine(settings)
        if jsonl is not None:
            report = _run_index_jsonl(engine, jsonl, sync, replace, on_ray)
        else:
            report = _run_index(engine, paths or [], sync, replace, on_ray)
    except RagError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        _print_json(report.as_dict())
    else:
        out.print(_summary(report))
    if report.sync_stopped:
        err.print(f"[bold red]{escape(report.sync_stopped)}[/]")
    if report.documents + report.unchanged + report.deleted == 0 and not report.failed:
        err.print("nothing was indexed: no supported documents found")
    raise typer.Exit(report.exit_code(strict))


def _engine(index_dir: Optional[Path]) -> Engine:
    settings, _ = _settings({"index.path": index_dir})
    return _new_engine(settings)


@app.command()
def delete(
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids (as `rag search --json` shows them).")],
    index_dir: IndexOpt = None,
    collection: Annotated[Optional[str], typer.Option(
        "--collection", "-c", help="The collection the ids belong to (needed when an id is in several).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove documents from the index (one atomic new version)."""
    try:
        settings, _ = _settings({"index.path": index_dir, "ingest.collection": collection})  # validates the name
        deleted, missing = _new_engine(settings).delete(doc_ids, collection)
    except RagError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        _print_json({"deleted": deleted, "not_found": missing})
    else:
        out.print(f"{len(deleted)} documents deleted")
        for doc_id in missing:
            err.print(f"[bold red]not found:[/] {shown(doc_id)} (see `rag search --json` for document ids)")
    raise typer.Exit(1 if missing else 0)


@app.command()
def compact(index_dir: IndexOpt = None) -> None:
    """Merge every segment of the index into one, dropping the vectors of deleted chunks."""
    try:
        dropped = _engine(index_dir).compact()
    except RagError as exc:
        raise _fail(str(exc)) from None
    out.print(f"segments merged into one; {dropped} vectors of deleted or replaced chunks dropped" if dropped
              else "nothing to compact")


@app.command()
def check(index_dir: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """Verify an index: checksums, FAISS ids against chunk rows, the manifest's counts."""
    try:
        settings, _ = _settings({"index.path": index_dir})
        problems = _new_engine(settings).check().problems
    except RagError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        _print_json({"ok": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            err.print(f"[bold red]problem:[/] {escape(problem)}")
    else:
        out.print(f"index {shown(settings.index.path)} is sound")
    raise typer.Exit(1 if problems else 0)


def _engine_for_reading(overrides: dict[str, Any]) -> Engine:
    """An engine whose index exists; the default index is built from corpus.path on first use."""
    settings, origins = _settings(overrides)
    engine = _new_engine(settings)
    if not engine.store.exists() and origins["index.path"].layer != "flag":
        corpus = settings.corpus.path
        if corpus.is_dir():
            err.print(f"No index at {shown(settings.index.path)} yet: building it from {shown(corpus)}/ first.")
            report = _run_index(engine, [corpus])
            err.print(_summary(report))
            if report.exit_code() != 0 and not engine.store.exists():
                raise RagError(f"could not build the index from {corpus}")
    return engine


@app.command()
def search(
    question: Annotated[str, typer.Argument(help="What to look for.")],
    index_dir: IndexOpt = None,
    k: Annotated[Optional[int], typer.Option("-k", "--top-k", help="How many passages.", min=1)] = None,
    filters: FilterOpt = None,
    mode: ModeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the passages that best match a question."""
    try:
        parse_filters(filters)  # a bad filter is reported before any index is built or model loads
        engine = _engine_for_reading({"index.path": index_dir, "search.k": k, "search.mode": mode})
        hits = engine.search(question, k, filters)
    except RagError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        _print_json([h.as_dict() for h in hits])
        return
    if not hits:
        out.print("no passages found")
    for rank, hit in enumerate(hits, start=1):
        where = f" · {hit.location}" if hit.location else ""
        out.print(f"[bold][{rank}][/] {hit.score:.3f}  [cyan]{shown(hit.doc_id)}[/]{shown(where)}")
        text = " ".join(hit.text.split())
        out.print("    " + escape(text[:400] + ("…" if len(text) > 400 else "")))


def _read_questions(path: Path) -> list[tuple[str, str]]:
    """(id, question) pairs from JSONL ({"id"?, "question"}) or plain text (one per line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RagError(f"cannot read {path}: {exc.strerror or exc}") from None
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RagError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not str(record.get("question", "")).strip():
                raise RagError(f"{path} line {number}: needs a non-empty 'question' field")
            questions.append((str(record.get("id", number)), str(record["question"])))
        else:
            questions.append((str(number), line.strip()))
    if not questions:
        raise RagError(f"{path} holds no questions")
    return questions


def _print_sources(answer: Answer) -> None:
    listed = answer.citations or []
    if answer.abstained:
        out.print("[dim]The passages found do not answer this question.[/]")
    if listed:
        out.print("\n[bold]Sources[/]")
        for c in listed:
            where = f" · {c.location}" if c.location else ""
            out.print(f"[bold][{c.number}][/] {shown(c.title)} — [cyan]{shown(c.doc_id)}[/]{shown(where)}")
    elif answer.passages:
        out.print("\n[bold]Passages considered[/]")
        for p in answer.passages:
            where = f" · {p.location}" if p.location else ""
            out.print(f"[{p.number}] {shown(p.title)} — [cyan]{shown(p.doc_id)}[/]{shown(where)}")
    if not answer.grounded and not answer.abstained:
        err.print("[yellow]warning:[/] the answer cites no passage it was given; treat it with care")


def _ask_file(engine: Engine, path: Path, out_path: Optional[Path], k: Optional[int], generator: Optional[str],
              batch: int, filters: Optional[list[str]]) -> None:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    questions = _read_questions(path)
    sink = out_path.open("w", encoding="utf-8") if out_path else sys.stdout
    started = time.perf_counter()
    try:
        with Progress(TextColumn("[bold]answering"), BarColumn(), TaskProgressColumn(),
                      TextColumn("{task.completed}/{task.total} questions · {task.fields[rate]} q/s"),
                      TextColumn("ETA"), TimeRemainingColumn(), console=err, disable=not err.is_terminal) as bar:
            task = bar.add_task("ask", total=len(questions), rate="-")
            for start in range(0, len(questions), batch):
                chunk = questions[start:start + batch]
                answers = engine.ask_many([q for _, q in chunk], k, generator, filters)
                for (qid, _), answer in zip(chunk, answers):
                    sink.write(json.dumps({"id": qid, **answer.as_dict()}, ensure_ascii=False) + "\n")
                sink.flush()
                done = start + len(chunk)
                bar.update(task, completed=done, rate=f"{done / (time.perf_counter() - started):.2f}")
                if not err.is_terminal:
                    err.print(f"  {done}/{len(questions)} questions, {done / (time.perf_counter() - started):.2f} q/s")
    finally:
        if out_path:
            sink.close()
    if out_path:
        err.print(f"{len(questions)} answers written to {shown(out_path)} in {time.perf_counter() - started:.1f} s")


@app.command()
def ask(
    question: Annotated[Optional[str], typer.Argument(help="The question.")] = None,
    index_dir: IndexOpt = None,
    k: Annotated[Optional[int], typer.Option("-k", "--top-k", help="Passages to retrieve.", min=1)] = None,
    generator: Annotated[Optional[str], typer.Option("--generator", "-g",
                                                     help="local, openai or extractive (default: answer.generator).")] = None,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Answer without an LLM: the best sentence, cited.")] = False,
    filters: FilterOpt = None,
    mode: ModeOpt = None,
    json_out: JsonOpt = False,
    file: Annotated[Optional[Path], typer.Option("--file", help="Questions to answer: JSONL with 'question' "
                                                 "(and 'id'), or one question per line.")] = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="With --file: write answers (JSONL) here.")] = None,
    batch: Annotated[int, typer.Option("--batch", help="With --file: questions retrieved together (and generated "
                                                 "together on a GPU; one at a time on a CPU, measured 3x faster).",
                                                 min=1)] = 8,
) -> None:
    """Answer a question from the indexed documents, with numbered sources."""
    from rag.answer import Answer

    if no_llm:
        generator = "extractive"
    if (question is None) == (file is None):
        raise _fail("give either a QUESTION or --file questions.jsonl", 2)
    try:
        parse_filters(filters)  # a bad filter is reported before any index is built or model loads
        engine = _engine_for_reading({"index.path": index_dir, "answer.k": k, "answer.generator": generator,
                                      "search.mode": mode})
        if file is not None:
            _ask_file(engine, file, out_path, k, generator, batch, filters)
            return
        if json_out:
            _print_json(engine.ask(question, k, generator, filters).as_dict())
            return
        answer, streamed = None, False
        for item in engine.ask_stream(question, k, generator, filters):
            if isinstance(item, str):
                sys.stdout.write(item)
                sys.stdout.flush()
                streamed = True
            elif isinstance(item, Answer):
                answer = item
        if streamed:
            sys.stdout.write("\n")
        elif answer is not None:
            out.print(escape(answer.answer))
        if answer is not None:
            for warning in answer.warnings:
                err.print(f"[yellow]warning:[/] {escape(warning)}")
            _print_sources(answer)
    except RagError as exc:
        raise _fail(str(exc)) from None


eval_app = typer.Typer(
    help="Measure retrieval (and answer) quality on a benchmark or on your own questions.", **_TYPER)
app.add_typer(eval_app, name="eval")

LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Evaluate a random sample of this many questions.",
                                                 min=1)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the --limit sample.")]
AnswersOpt = Annotated[bool, typer.Option("--answers", help="Also generate answers and score them: EM/F1, "
                                           "contains the reference, cites the source, abstentions.")]
EvalKOpt = Annotated[int, typer.Option("-k", help="Depth of the reported ranking metrics (nDCG@k uses 10).", min=1)]


def _show_eval(report: Any, json_out: bool) -> None:
    if json_out:
        _print_json(report.as_dict())
        return
    from rich.table import Table

    table = Table(title=f"{shown(report.dataset)} · {report.mode} · {report.questions} questions")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in {**report.retrieval, **report.answers}.items():
        # EM and F1 are 0 to 100, as SQuAD reports them; the other floats are shares of 1
        table.add_row(key, f"{value:.1f}" if key in ("EM", "F1") else f"{value:.4f}"
                      if isinstance(value, float) else str(value))
    for stage, q in report.latency_ms.items():
        table.add_row(f"latency {stage} p50 / p95", f"{q['p50']:.1f} / {q['p95']:.1f} ms")
    out.print(table)
    out.print(f"index {shown(report.index)}, {report.seconds:.1f} s")


def _questions_bar(total: int) -> tuple[Progress, Callable[[int], None]]:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]evaluating"), BarColumn(), TaskProgressColumn(),
                   TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(), console=err,
                   disable=not err.is_terminal)
    task = bar.add_task("eval", total=total)
    return bar, lambda i: bar.update(task, completed=i)


def _run_eval(name: str, engine: Engine, prepared: tuple[list, dict], mode: Optional[str], k: int,
              answers: bool, generator: Optional[str], json_out: bool) -> None:
    from rag.evaluate.run import evaluate, evaluation_steps

    questions, qrels = prepared
    bar, tick = _questions_bar(evaluation_steps(questions, qrels, answers))
    with bar:
        report = evaluate(engine, name, questions, qrels, mode, k, answers, generator, tick)
    _show_eval(report, json_out)


@eval_app.command("beir")
def eval_beir(
    directory: Annotated[Path, typer.Argument(help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.")],
    split: Annotated[str, typer.Option("--split", help="Which qrels file.")] = "test",
    mode: ModeOpt = None, k: EvalKOpt = 10, limit: LimitOpt = None, seed: SeedOpt = 0,
    index_dir: IndexOpt = None, json_out: JsonOpt = False,
) -> None:
    """nDCG@10, Recall@1/5/10/100 and MRR@10 on a BEIR dataset (indexed on first use)."""
    from rag.evaluate.run import prepare_beir

    try:
        engine = _engine(index_dir or Path("indexes") / "eval" / directory.resolve().name)
        with _ProgressBar(err) as bar:
            prepared = prepare_beir(engine, str(directory), split, limit, seed, bar)
        _run_eval(directory.name, engine, prepared, mode, k, False, None, json_out)
    except RagError as exc:
        raise _fail(str(exc)) from None


@eval_app.command("squad")
def eval_squad(
    file: Annotated[Path, typer.Argument(help="SQuAD-format JSON: every paragraph is a document.")],
    mode: ModeOpt = None, k: EvalKOpt = 10, limit: LimitOpt = None, seed: SeedOpt = 0,
    answers: AnswersOpt = False,
    generator: Annotated[Optional[str], typer.Option("--generator", "-g", help="With --answers.")] = None,
    index_dir: IndexOpt = None, json_out: JsonOpt = False,
) -> None:
    """Recall and MRR of each question's paragraph; with --answers, EM and F1 too."""
    from rag.evaluate.run import prepare_squad

    try:
        engine = _engine(index_dir or Path("indexes") / "eval" / file.resolve().stem)
        with _ProgressBar(err) as bar:
            prepared = prepare_squad(engine, str(file), limit, seed, bar)
        _run_eval(file.name, engine, prepared, mode, k, answers, generator, json_out)
    except RagError as exc:
        raise _fail(str(exc)) from None


@eval_app.command("qa")
def eval_qa(
    file: Annotated[Path, typer.Argument(help="JSONL of {question, answer?, doc_id?} over your own index.")],
    mode: ModeOpt = None, k: EvalKOpt = 10, limit: LimitOpt = None, seed: SeedOpt = 0,
    answers: AnswersOpt = False,
    generator: Annotated[Optional[str], typer.Option("--generator", "-g", help="With --answers.")] = None,
    index_dir: IndexOpt = None, json_out: JsonOpt = False,
) -> None:
    """How well your index finds each question's source document (and answers it)."""
    from rag.evaluate.run import prepare_qa

    try:
        engine = _engine_for_reading({"index.path": index_dir})
        _run_eval(file.name, engine, prepare_qa(str(file), limit, seed), mode, k, answers, generator, json_out)
    except RagError as exc:
        raise _fail(str(exc)) from None


keys_app = typer.Typer(
    help="API keys of the HTTP service: scoped, limited to documents by filters, stored hashed.", **_TYPER)
app.add_typer(keys_app, name="keys")


def _key_store(index_dir: Optional[Path], settings: Optional[Settings] = None) -> "KeyStore":
    from rag.serve.keys import KeyStore, keys_path

    settings = settings or _settings({"index.path": index_dir})[0]
    return KeyStore(keys_path(settings.index.path, settings.serve.keys_file))


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="A name for the key (a portal, a team); shown in logs, never the key.")],
    scope: Annotated[str, typer.Option("--scope", help="read (ask, search, list, feedback), write (also upload and "
                                                      "delete) or admin (also stats and keys).")] = "read",
    filters: Annotated[Optional[list[str]], typer.Option(
        "--filter", "-f", help="Limit the key to documents matching KEY=VALUE (repeatable, all must hold; the "
                               "`rag search --filter` language), e.g. source=hr/* or collection=hr.")] = None,
    index_dir: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    try:
        store = _key_store(index_dir)
        key, token = store.add(name, scope, filters)  # type: ignore[arg-type]
    except RagError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        _print_json({**key.as_dict(), "key": token})
        return
    out.print(token)
    err.print(f"key {shown(name)} ({scope}"
              + (f", limited to {shown(' and '.join(key.filters))}" if key.filters else "")
              + f") stored in {shown(store.path)}; this is the only time it is shown")


@keys_app.command("list")
def keys_list(index_dir: IndexOpt = None, json_out: JsonOpt = False,
              revoked: Annotated[bool, typer.Option("--revoked", help="Also list revoked keys.")] = False) -> None:
    """The keys (names, scopes, filters; never the keys themselves)."""
    try:
        keys = _key_store(index_dir).list(include_revoked=revoked)
    except RagError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        _print_json([k.as_dict() for k in keys])
        return
    if not keys:
        out.print("no keys (`rag keys add NAME --scope read` creates one)")
    for k in keys:
        out.print(f"{shown(k.name):<24} {k.scope:<6} {shown(' and '.join(k.filters)) or 'all documents':<32} "
                  f"created {k.created_at}" + (f", revoked {k.revoked_at}" if k.revoked_at else ""))


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")], index_dir: IndexOpt = None) -> None:
    """Revoke a key at once; requests carrying it get 401."""
    try:
        done = _key_store(index_dir).revoke(name)
    except RagError as exc:
        raise _fail(str(exc)) from None
    if not done:
        raise _fail(f"no active key named {name!r} (see `rag keys list`)")
    out.print(f"key {shown(name)} revoked")


feedback_app = typer.Typer(
    help="Ratings of the service's answers (POST /v1/feedback), as a regression set.", **_TYPER)
app.add_typer(feedback_app, name="feedback")

RatingOpt = Annotated[str, typer.Option("--rating", help="Which ratings: up, down or all.")]
ExportOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="The file to write (default: stdout).")]


def _feedback_store(index_dir: Optional[Path]) -> "FeedbackStore":
    from rag.serve.feedback import FeedbackStore, feedback_path

    settings = _settings({"index.path": index_dir})[0]
    return FeedbackStore(feedback_path(settings.index.path, settings.serve.feedback_file))


@feedback_app.command("export")
def feedback_export(rating: RatingOpt = "all", index_dir: IndexOpt = None, output: ExportOpt = None) -> None:
    """Write the rated questions as a `rag eval qa` file, so what users flag becomes a regression set.

    A thumbs-up becomes the question with its answer (without [n] markers) and first cited document
    as gold; a thumbs-down, the question alone: `rag eval qa FILE --answers` asks it again."""
    from rag.serve.feedback import chosen_rating

    try:
        store, chosen = _feedback_store(index_dir), chosen_rating(rating)
        written = store.export(output, chosen) if output else store.write_qa(sys.stdout, chosen)
    except RagError as exc:
        raise _fail(str(exc)) from None
    err.print(f"{written} rated question{'s' if written != 1 else ''} written"
              + (f" to {shown(output)}" if output else ""))


@feedback_app.command("list")
def feedback_list(rating: RatingOpt = "all", index_dir: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """The ratings: when, which key, the rating, the question and the comment."""
    from rag.serve.feedback import chosen_rating

    try:
        ratings = _feedback_store(index_dir).ratings(chosen_rating(rating))
    except RagError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        _print_json([f.as_dict() for f in ratings])
        return
    if not ratings:
        out.print("no ratings yet (POST /v1/feedback adds them)")
    for f in ratings:
        out.print(f"{f.rated_at}  {f.rating:<4}  {f.answer_id}  {shown(f.key_name or '-')}  {shown(f.question)}"
                  + (f"  # {shown(f.comment)}" if f.comment else ""))


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="Address to listen on [serve.host].")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port to listen on [serve.port].", min=1,
                                                max=65535)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Server processes [serve.workers]; each "
                                                   "loads its own models.", min=1, max=64)] = None,
    index_dir: IndexOpt = None,
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth", help="Serve a non-loopback address without keys (anyone who reaches it reads "
                                   "every document).")] = False,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs); models and the index load before it listens."""
    import ipaddress

    import uvicorn

    from rag.generate.factory import make_generator
    from rag.serve.app import CONFIG_ENV, NETWORK_OPEN, OPEN_ACCESS_ENV, create_app
    from rag.serve.metrics import multiprocess_dir, shared_metrics_dir
    from rag.serve.middleware import log_access_to_stderr
    from rag.serve.service import offered_generators

    try:
        multiprocess_dir()  # a PROMETHEUS_MULTIPROC_DIR that cannot work is named before any model loads
        # The default index is built from corpus.path on first use, as for `rag ask`.
        engine = _engine_for_reading({"index.path": index_dir, "serve.host": host, "serve.port": port,
                                      "serve.workers": workers})
        settings = engine.settings
        store = _key_store(index_dir, settings)
        has_keys = store.any_active()
        # A generator that is not configured fails here, with its message, not in every worker.
        for generator in offered_generators(settings):
            make_generator(settings, engine.embedder, generator)
    except RagError as exc:
        raise _fail(str(exc)) from None
    host, port, workers = settings.serve.host, settings.serve.port, settings.serve.workers
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not has_keys and not loopback and not insecure_no_auth:
        raise _fail(f"no API keys exist, and {host} is reachable from other machines: add a key first "
                    f"(`rag keys add NAME --scope read`, stored in {store.path}), or pass --insecure-no-auth "
                    "to serve every document to anyone who can connect", 2)
    configured = store.configured()
    if not configured:
        err.print(f"[yellow]serving without keys[/]: every request may read every document "
                  f"({'loopback only' if loopback else 'OPEN TO THE NETWORK'}) until a key is added")
    elif not has_keys:
        err.print("[yellow]every key is revoked[/]: requests get 401 until `rag keys add` makes a new one")
    log_access_to_stderr()
    # Deadlines for slow clients' headers and bodies, and a cap on connections per address.
    from rag.serve.connections import protocol_factory

    if workers == 1:
        uvicorn.run(create_app(settings, open_access=not configured, engine=engine, loopback_only=loopback),
                    host=host, port=port, log_level="info", access_log=False, http=protocol_factory(settings.serve))
        return
    # Worker processes build their own app from the environment: pass on what the flags said.
    from rag.config import env_var_name

    open_mode = "0" if configured else "1" if loopback else NETWORK_OPEN
    os.environ.update({env_var_name("index.path"): str(settings.index.path), OPEN_ACCESS_ENV: open_mode})
    if state.config_file:
        os.environ[CONFIG_ENV] = str(state.config_file)
    # Prometheus multi-process mode, so that /metrics on any worker reports every worker's counts.
    with shared_metrics_dir():
        uvicorn.run("rag.serve.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                    log_level="info", access_log=False, http=protocol_factory(settings.serve))


@app.command()
def info(index_dir: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """Show an index's manifest, counts and size on disk."""
    try:
        settings, _ = _settings({"index.path": index_dir})
        data = _new_engine(settings).info()
    except RagError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        _print_json(asdict(data))
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
    out.print(f"embedding  {shown(e['model'])} (dim {e['dimension']}, normalized {e['normalize']}, "
              f"max {e['max_seq_length']} tokens)")
    c = m["chunking"]
    out.print(f"chunking   {c['chunk_size']} tokens, overlap {c['chunk_overlap']}, heading prefix {c['heading_prefix']}")
    out.print(f"faiss      {shown(m['index']['factory'])} ({m['index']['metric']}, faiss {m['index'].get('faiss_version')})")
    out.print(f"created    {m['created_at']}   updated {m['updated_at']}")


@app.command("config")
def show_config(json_out: JsonOpt = False) -> None:
    """Print the effective settings and where each one came from."""
    from rag.config import env_var_name, settings_as_flat_dict

    try:
        settings, origins = _settings({})
    except RagError as exc:
        raise _fail(str(exc)) from None
    flat = settings_as_flat_dict(settings)
    if json_out:
        _print_json({key: {"value": value, "source": str(origins[key]), "env": env_var_name(key)}
                     for key, value in flat.items()})
        return
    width = max(len(k) for k in flat)
    for key, value in flat.items():
        out.print(f"{key:<{width}}  {escape(json.dumps(value, ensure_ascii=False))}  [dim]# {escape(str(origins[key]))}[/]")


def main() -> None:
    app()
