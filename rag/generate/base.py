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

    def count_tokens(self, text: str) -> int: ...

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> list[Generation]: ...

    def stream(self, prompt: Prompt, max_new_tokens: int) -> Iterator[str]: ...
