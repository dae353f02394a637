"""`rag search` and `rag ask`: reading the index."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from rag.cli.common import (FilterOpt, IndexOpt, JsonOpt, ModeOpt, engine_for_reading, err, fail, out, print_json,
                            progress_bar, shown)
from rag.errors import RagError

if TYPE_CHECKING:
    from rag.citations import Answer
    from rag.engine import Engine


def _check_filters(filters: Optional[list[str]]) -> None:
    """A bad filter is reported before any index is built or model loads."""
    from rag.filters import parse_filters

    parse_filters(filters)


def search(
    question: Annotated[str, typer.Argument(help="What to look for.")],
    index_dir: IndexOpt = None,
    k: Annotated[Optional[int], typer.Option("-k", "--top-k", help="How many passages.", min=1)] = None,
    filters: FilterOpt = None,
    mode: ModeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the passages that best match a question."""
    _check_filters(filters)
    engine = engine_for_reading({"index.path": index_dir, "search.k": k, "search.mode": mode})
    hits = engine.search(question, k, filters)
    if json_out:
        print_json([h.as_dict() for h in hits])
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
    questions = _read_questions(path)
    sink = out_path.open("w", encoding="utf-8") if out_path else sys.stdout
    started = time.perf_counter()
    try:
        with progress_bar("answering", "{task.completed}/{task.total} questions · {task.fields[rate]} q/s ETA") as bar:
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


def _ask_one(engine: Engine, question: str, k: Optional[int], generator: Optional[str],
             filters: Optional[list[str]]) -> None:
    """The answer as the generator writes it, then its warnings and sources."""
    from rag.citations import Answer

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
    if no_llm:
        generator = "extractive"
    if (question is None) == (file is None):
        raise fail("give either a QUESTION or --file questions.jsonl", 2)
    _check_filters(filters)
    engine = engine_for_reading({"index.path": index_dir, "answer.k": k, "answer.generator": generator,
                                 "search.mode": mode})
    if file is not None:
        _ask_file(engine, file, out_path, k, generator, batch, filters)
    elif json_out:
        print_json(engine.ask(question, k, generator, filters).as_dict())
    else:
        _ask_one(engine, question, k, generator, filters)
