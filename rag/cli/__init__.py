"""The `rag` command: translates flags to settings, calls the Engine, prints the result.

One module per command group (indexing, search, chat, evaluation, keys, feedback, serving, config), what
they share in `common`, and every command registered on the app below, in the order `rag --help`
lists them. A command raises RagError for what the user has to act on; `main()` is the one place
that prints it and exits 1. Heavy modules (the engine, torch, faiss, uvicorn, pydantic settings)
are imported by the command that needs them, so that `rag --help` stays near 0.1 s.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rag.cli import audit, chat, evaluation, feedback, indexing, keys, search, serving, sources, tune
from rag.cli.config import show_config
from rag.cli.common import TYPER_SETTINGS, print_error, state
from rag.errors import RagError

app = typer.Typer(
    name="rag",
    help="Retrieval-augmented question answering over your own documents.",
    add_completion=False,
    **TYPER_SETTINGS,
)


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


COMMANDS = {
    "index": indexing.index,
    "delete": indexing.delete,
    "compact": indexing.compact,
    "check": indexing.check,
    "search": search.search,
    "ask": search.ask,
    "chat": chat.chat,
    "serve": serving.serve,
    "info": indexing.info,
    "config": show_config,
    "tune": tune.tune,
}
GROUPS = {"eval": evaluation.app, "keys": keys.app, "feedback": feedback.app, "audit": audit.app, "sources": sources.app}
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)


def main() -> None:
    """The `rag` entry point, and the one error boundary: a RagError is printed, and exits 1."""
    try:
        app()
    except RagError as exc:
        print_error(str(exc))
        sys.exit(1)
