"""`rag tune`: fine-tune the index's embedding model on your questions, and measure it first."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rag.cli.common import IndexOpt, JsonOpt, engine_at, err, out, print_json, shown


def _table(report: Any) -> None:
    from rich.table import Table

    table = Table(title=f"dense retrieval · {report.eval_questions} held-out questions · {report.chunks} chunks")
    for column, justify in (("metric", "left"), ("current", "right"), ("tuned", "right"), ("change", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for metric, before in report.current.items():
        after = report.tuned[metric]
        table.add_row(metric, f"{before:.4f}", f"{after:.4f}", f"{after - before:+.4f}")
    out.print(table)
    out.print(f"{report.train_pairs} training pairs ({report.hard_negatives} hard negative(s) each), "
              f"{report.train_seconds:.1f} s training: {report.seconds_per_1000_pairs:.1f} s per 1,000 pairs per epoch")
    out.print("hybrid figures need the index re-embedded with the tuned model; not measured here")
    if report.recommended:
        out.print(f"[green]recommended[/]: {shown(report.reason)}; set embedding.model = {shown(report.output)}")
    else:
        err.print(f"[bold red]not recommended[/]: {shown(report.reason)}")


def tune(
    pairs: Annotated[Path, typer.Option("--pairs", help="JSONL of {question, doc_id} (the `rag eval qa` format) "
                                        "or {question, passage} records.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the tuned model to.")],
    index: IndexOpt = None,
    holdout: Annotated[float, typer.Option("--holdout", help="Share of the pairs held out to measure both models.",
                                           min=0.01, max=0.99)] = 0.2,
    eval_file: Annotated[Optional[Path], typer.Option("--eval", help="Measure on this JSONL instead of a "
                                                      "held-out share (all pairs then train).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="In-batch negatives per question.")] = 16,
    learning_rate: Annotated[float, typer.Option("--learning-rate", min=0.0)] = 2e-5,
    negatives: Annotated[int, typer.Option("--negatives", min=0, help="Hard negatives mined per pair.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the hold-out split and training.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune the index's embedding model on question pairs; exits 3 when it is not better."""
    from rag.tune import TuneOptions
    from rag.tune import tune as run_tune
    from rag.tune.train import TrainOptions

    training = TrainOptions(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                            negatives=negatives)
    engine = engine_at(index)
    try:
        with err.status("tuning: mining negatives, training, measuring both models"):
            report = run_tune(engine, TuneOptions(pairs, output, holdout, eval_file, training))
    finally:
        engine.close()
    if json_out:
        print_json(report.as_dict())
    else:
        _table(report)
    if not report.recommended:
        raise typer.Exit(3)
