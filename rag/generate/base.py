"""The generator interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal, Protocol

from rag.errors import RagError
from rag.prompt import Prompt


class GeneratorError(RagError):
    """A generator could not produce an answer (unreachable server, bad model path, ...)."""


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # e.g. first_token


class Generator(Protocol):
    """Backends take a Prompt and render it the way their model expects."""

    name: str
    style: Literal["chat", "completion"]  # which rendering of the prompt the model gets
    context_tokens: int
    # Whether it reads a conversation's earlier turns (Prompt.history) and can rewrite a
    # follow-up as a standalone question.
    converses: bool

    def count_tokens(self, text: str) -> int: ...

    def generate(self, prompts: list[Prompt], max_new_tokens: int,
                 timeout: float | None = None) -> list[Generation]:
        """One generation per prompt; with `timeout`, a GeneratorError when they are not all
        done within that many seconds (a follow-up's rewrite, which has a fallback)."""
        ...

    def stream(self, prompt: Prompt, max_new_tokens: int) -> Iterator[str]: ...
