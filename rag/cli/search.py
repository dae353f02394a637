"""`rag search` and `rag ask`: reading the index."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape

from rag.cli.common import (FilterOpt, GeneratorOpt, IndexOpt, JsonOpt, ModeOpt, NoLlmOpt, TopKOpt,
                            engine_for_reading, err, fail, out, print_json, progress_bar, shown)
from rag.errors import RagError

if TYPE_CHECKING:
    from rag.citations import Answer
    from rag.conversation import Turn
    from rag.engine import Engine

HistoryOpt = Annotated[Optional[Path], typer.Option(
    "--history", help="The conversation's earlier turns: JSONL of {\"role\": \"user\" or \"assistant\", "
                      "\"content\"}, oldest first; a follow-up is searched as a standalone question.")]


def read_history(path: Path) -> list[Turn]:
    """Turns from a JSONL file, one {"role", "content"} per line; errors name the line."""
    from rag.conversation import turns_from
    from rag.errors import ConfigError

    turns: list[Turn] = []
    for number, line in _lines(path):
        try:
            turns += turns_from([_json_line(line, path, number)])
        except ConfigError:
            raise RagError(f"{path} line {number}: expected {{\"role\": \"user\" or \"assistant\", "
                           "\"content\": text}") from None
    return turns


def _lines(path: Path) -> list[tuple[int, str]]:
    """(number, line) of a text file's non-blank lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RagError(f"cannot read {path}: {exc.strerror or exc}") from None
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _json_line(line: str, path: Path, number: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise RagError(f"{path} line {number}: not valid JSON ({exc.msg})") from None


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
    history_file: HistoryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the passages that best match a question."""
    _check_filters(filters)
    history = read_history(history_file) if history_file else []
    engine = engine_for_reading({"index.path": index_dir, "search.k": k, "search.mode": mode})
    hits = engine.search(question, k, filters, history=history)
    query = engine.search_query(question, history)
    if query != question and not json_out:
        err.print(f"[dim]searched for: {escape(query)}[/]")
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


def _read_questions(path: Path) -> list[tuple[str, str, list[Turn]]]:
    """(id, question, history) from JSONL ({"id"?, "question", "history"?}) or plain text (one
    question per line, no history)."""
    from rag.conversation import turns_from

    questions = []
    for number, line in _lines(path):
        if line.lstrip().startswith("{"):
            record = _json_line(line, path, number)
            if not isinstance(record, dict) or not str(record.get("question", "")).strip():
                raise RagError(f"{path} line {number}: needs a non-empty 'question' field")
            history = turns_from(record.get("history") or [], f"{path} line {number}: history")
            questions.append((str(record.get("id", number)), str(record["question"]), history))
        else:
            questions.append((str(number), line.strip(), []))
    if not questions:
        raise RagError(f"{path} holds no questions")
    return questions


def print_sources(answer: Answer) -> None:
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
                answers = engine.ask_many([q for _, q, _ in chunk], k, generator, filters,
                                          histories=[h for _, _, h in chunk])
                for (qid, _, _), answer in zip(chunk, answers):
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


def answer_streamed(engine: Engine, question: str, k: Optional[int], generator: Optional[str],
                    filters: Optional[list[str]], history: list[Turn] | None = None) -> Answer | None:
    """The answer as the generator writes it (with what was searched, for a follow-up), then its
    warnings and sources; returns the Answer."""
    from rag.citations import Answer, Retrieved

    answer, streamed = None, False
    for item in engine.ask_stream(question, k, generator, filters, history=history):
        if isinstance(item, Retrieved) and item.query != question:
            err.print(f"[dim]searched for: {escape(item.query)}[/]")
        elif isinstance(item, str):
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
        print_sources(answer)
    return answer


def ask(
    question: Annotated[Optional[str], typer.Argument(help="The question.")] = None,
    index_dir: IndexOpt = None,
    k: TopKOpt = None,
    generator: GeneratorOpt = None,
    no_llm: NoLlmOpt = False,
    filters: FilterOpt = None,
    mode: ModeOpt = None,
    json_out: JsonOpt = False,
    file: Annotated[Optional[Path], typer.Option("--file", help="Questions to answer: JSONL with 'question' "
                                                 "(and 'id'), or one question per line.")] = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="With --file: write answers (JSONL) here.")] = None,
    history_file: HistoryOpt = None,
    batch: Annotated[int, typer.Option("--batch", help="With --file: questions retrieved together (and generated "
                                                 "together on a GPU; one at a time on a CPU, measured 3x faster).",
                                                 min=1)] = 8,
) -> None:
    """Answer a question from the indexed documents, with numbered sources."""
    if no_llm:
        generator = "extractive"
    if (question is None) == (file is None):
        raise fail("give either a QUESTION or --file questions.jsonl", 2)
    if history_file is not None and file is not None:
        raise fail("--history goes with one QUESTION, not with --file (give each record of the file its own "
                   "\"history\")", 2)
    history = read_history(history_file) if history_file else []
    _check_filters(filters)
    engine = engine_for_reading({"index.path": index_dir, "answer.k": k, "answer.generator": generator,
                                 "search.mode": mode})
    if file is not None:
        _ask_file(engine, file, out_path, k, generator, batch, filters)
    elif json_out:
        print_json(engine.ask(question, k, generator, filters, history=history).as_dict())
    else:
        answer_streamed(engine, question, k, generator, filters, history)
