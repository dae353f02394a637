"""`rag eval beir|squad|qa`: retrieval (and answer) quality on a benchmark or on your own questions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from rag.cli.common import (TYPER_SETTINGS, IndexBar, IndexOpt, JsonOpt, ModeOpt, engine_at, engine_for_reading,
                            out, print_json, progress_bar, shown)

if TYPE_CHECKING:
    from rag.engine import Engine
    from rag.evaluate.datasets import EvalQuestion
    from rag.evaluate.metrics import Qrels

app = typer.Typer(help="Measure retrieval (and answer) quality on a benchmark or on your own questions.",
                  **TYPER_SETTINGS)

LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Evaluate a random sample of this many questions.",
                                                 min=1)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the --limit sample.")]
AnswersOpt = Annotated[bool, typer.Option("--answers", help="Also generate answers and score them: EM/F1, "
                                           "contains the reference, cites the source, abstentions.")]
EvalKOpt = Annotated[int, typer.Option("-k", help="Depth of the reported ranking metrics (nDCG@k uses 10).", min=1)]
GeneratorOpt = Annotated[Optional[str], typer.Option("--generator", "-g", help="With --answers.")]


@dataclass
class _Scoring:
    """What every `rag eval` command measures and how it reports it."""

    mode: Optional[str]
    k: int
    answers: bool = False
    generator: Optional[str] = None
    json_out: bool = False


def _show_eval(report: Any, json_out: bool) -> None:
    if json_out:
        print_json(report.as_dict())
        return
    from rich.table import Table

    table = Table(title=f"{shown(report.dataset)} · {report.mode} · {report.questions} questions")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in {**report.retrieval, **report.answers}.items():
        table.add_row(key, _metric(key, value))
    for stage, q in report.latency_ms.items():
        table.add_row(f"latency {stage} p50 / p95", f"{q['p50']:.1f} / {q['p95']:.1f} ms")
    out.print(table)
    if report.conversation:
        out.print(_conversation_table(report.conversation))
    out.print(f"index {shown(report.index)}, {report.seconds:.1f} s")


def _metric(key: str, value: Any) -> str:
    # EM and F1 are 0 to 100, as SQuAD reports them; the other floats are shares of 1
    return f"{value:.1f}" if key in ("EM", "F1") else f"{value:.4f}" if isinstance(value, float) else str(value)


def _conversation_table(conversation: dict[str, Any]) -> Any:
    """The follow-ups asked with their history, as their last turn alone, and standalone."""
    from rich.table import Table

    ways = conversation["ways"]
    table = Table(title=f"{conversation['questions']} follow-ups, asked each way")
    table.add_column("metric")
    for way in ways:
        table.add_column(way.replace("_", " "), justify="right")
    for part in ("retrieval", "answers"):
        scores = conversation[part]
        for key in scores.get("history", {}):
            table.add_row(key, *(_metric(key, scores[way].get(key, "")) for way in ways))
    return table


def _run_eval(name: str, engine: Engine, prepared: tuple[list[EvalQuestion], Qrels], scoring: _Scoring) -> None:
    """The one path of every `rag eval`: score the prepared questions, show the report."""
    from rag.evaluate.run import evaluate, evaluation_steps

    questions, qrels = prepared
    total = evaluation_steps(questions, qrels, scoring.answers)
    bar = progress_bar("evaluating", "{task.completed}/{task.total}")
    task = bar.add_task("eval", total=total)
    with bar:
        report = evaluate(engine, name, questions, qrels, scoring.mode, scoring.k, scoring.answers,
                          scoring.generator, lambda i: bar.update(task, completed=i))
    _show_eval(report, scoring.json_out)


def _eval_index(index_dir: Optional[Path], dataset: str) -> Engine:
    """--index, or an index of its own under indexes/eval/ for a benchmark's corpus."""
    return engine_at(index_dir or Path("indexes") / "eval" / dataset)


@app.command("beir")
def eval_beir(
    directory: Annotated[Path, typer.Argument(help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.")],
    split: Annotated[str, typer.Option("--split", help="Which qrels file.")] = "test",
    mode: ModeOpt = None, k: EvalKOpt = 10, limit: LimitOpt = None, seed: SeedOpt = 0,
    index_dir: IndexOpt = None, json_out: JsonOpt = False,
) -> None:
    """nDCG@10, Recall@1/5/10/100 and MRR@10 on a BEIR dataset (indexed on first use)."""
    from rag.evaluate.run import prepare_beir

    engine = _eval_index(index_dir, directory.resolve().name)
    with IndexBar() as bar:
        prepared = prepare_beir(engine, str(directory), split, limit, seed, bar)
    _run_eval(directory.name, engine, prepared, _Scoring(mode, k, json_out=json_out))


@app.command("squad")
def eval_squad(
    file: Annotated[Path, typer.Argument(help="SQuAD-format JSON: every paragraph is a document.")],
    mode: ModeOpt = None, k: EvalKOpt = 10, limit: LimitOpt = None, seed: SeedOpt = 0,
    answers: AnswersOpt = False, generator: GeneratorOpt = None,
    index_dir: IndexOpt = None, json_out: JsonOpt = False,
) -> None:
    """Recall and MRR of each question's paragraph; with --answers, EM and F1 too."""
    from rag.evaluate.run import prepare_squad

    engine = _eval_index(index_dir, file.resolve().stem)
    with IndexBar() as bar:
        prepared = prepare_squad(engine, str(file), limit, seed, bar)
    _run_eval(file.name, engine, prepared, _Scoring(mode, k, answers, generator, json_out))


@app.command("qa")
def eval_qa(
    file: Annotated[Path, typer.Argument(help="JSONL of {question, answer?, doc_id?} over your own index.")],
    mode: ModeOpt = None, k: EvalKOpt = 10, limit: LimitOpt = None, seed: SeedOpt = 0,
    answers: AnswersOpt = False, generator: GeneratorOpt = None,
    index_dir: IndexOpt = None, json_out: JsonOpt = False,
) -> None:
    """How well your index finds each question's source document (and answers it)."""
    from rag.evaluate.run import prepare_qa

    engine = engine_for_reading({"index.path": index_dir})
    _run_eval(file.name, engine, prepare_qa(str(file), limit, seed), _Scoring(mode, k, answers, generator, json_out))
