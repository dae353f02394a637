"""`rag feedback export|list`: the ratings of the service's answers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from rag.cli.common import TYPER_SETTINGS, IndexOpt, JsonOpt, err, load_settings, out, print_json, shown

if TYPE_CHECKING:
    from rag.serve.feedback import FeedbackStore

app = typer.Typer(help="Ratings of the service's answers (POST /v1/feedback), as a regression set.",
                  **TYPER_SETTINGS)

RatingOpt = Annotated[str, typer.Option("--rating", help="Which ratings: up, down or all.")]
ExportOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="The file to write (default: stdout).")]


def _feedback_store(index_dir: Optional[Path]) -> FeedbackStore:
    from rag.serve.feedback import FeedbackStore, feedback_path

    settings = load_settings({"index.path": index_dir})[0]
    return FeedbackStore(feedback_path(settings.index.path, settings.serve.feedback_file))


@app.command("export")
def feedback_export(rating: RatingOpt = "all", index_dir: IndexOpt = None, output: ExportOpt = None) -> None:
    """Write the rated questions as a `rag eval qa` file, so what users flag becomes a regression set.

    A thumbs-up becomes the question with its answer (without [n] markers) and first cited document
    as gold; a thumbs-down, the question alone: `rag eval qa FILE --answers` asks it again."""
    from rag.serve.feedback import chosen_rating

    store, chosen = _feedback_store(index_dir), chosen_rating(rating)
    written = store.export(output, chosen) if output else store.write_qa(sys.stdout, chosen)
    err.print(f"{written} rated question{'s' if written != 1 else ''} written"
              + (f" to {shown(output)}" if output else ""))


@app.command("list")
def feedback_list(rating: RatingOpt = "all", index_dir: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """The ratings: when, which key, the rating, the question and the comment."""
    from rag.serve.feedback import chosen_rating

    ratings = _feedback_store(index_dir).ratings(chosen_rating(rating))
    if json_out:
        print_json([f.as_dict() for f in ratings])
        return
    if not ratings:
        out.print("no ratings yet (POST /v1/feedback adds them)")
    for f in ratings:
        out.print(f"{f.rated_at}  {f.rating:<4}  {f.answer_id}  {shown(f.key_name or '-')}  {shown(f.question)}"
                  + (f"  # {shown(f.comment)}" if f.comment else ""))
