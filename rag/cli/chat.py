"""`rag chat`: a conversation over an index in the terminal.

Each question is asked with the turns before it, so a follow-up ("and in Shanghai?") is
searched as a standalone question (shown as "searched for: ...") and answered in context. The
answer streams, then its sources. `/new` starts a new conversation, `/sources` shows the last
answer's sources again, `/help` lists the commands; Ctrl-D (or `/quit`) leaves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from rag.cli.common import (FilterOpt, GeneratorOpt, IndexOpt, ModeOpt, NoLlmOpt, TopKOpt, engine_for_reading, err,
                            out)
from rag.cli.search import answer_streamed, print_sources

if TYPE_CHECKING:
    from rag.citations import Answer
    from rag.conversation import Turn

COMMANDS = {"/new": "start a new conversation", "/sources": "the last answer's sources again",
            "/help": "this list", "/quit": "leave (or Ctrl-D)"}


def chat(
    index_dir: IndexOpt = None,
    k: TopKOpt = None,
    generator: GeneratorOpt = None,
    no_llm: NoLlmOpt = False,
    filters: FilterOpt = None,
    mode: ModeOpt = None,
) -> None:
    """Talk with the indexed documents: follow-up questions are answered in context."""
    from rag.conversation import Turn

    if no_llm:
        generator = "extractive"
    engine = engine_for_reading({"index.path": index_dir, "answer.k": k, "answer.generator": generator,
                                 "search.mode": mode})
    err.print("[dim]Ask a question; follow-ups are answered in context. /new starts over, /sources shows the "
              "last sources, Ctrl-D leaves.[/]")
    history: list[Turn] = []
    last: Answer | None = None
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            err.print()
            return
        if not line:
            continue
        if line.startswith("/"):
            if _command(line, last, history):
                return
            if line == "/new":
                last = None
            continue
        answer = answer_streamed(engine, line, k, generator, filters, history)
        if answer is not None:
            last = answer
            history += [Turn("user", line), Turn("assistant", answer.answer)]
        out.print()


def _command(line: str, last: Answer | None, history: list[Turn]) -> bool:
    """Carry out a /command; True when the conversation is to end."""
    if line in ("/quit", "/exit"):
        return True
    if line == "/new":
        history.clear()
        err.print("[dim]New conversation.[/]")
    elif line == "/sources":
        if last is None:
            err.print("[dim]No answer yet.[/]")
        else:
            print_sources(last)
    else:
        for name, what in COMMANDS.items():
            err.print(f"[bold]{name}[/]  {escape(what)}")
    return False
