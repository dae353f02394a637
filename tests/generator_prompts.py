"""The prompt the answering pipeline builds for a question over given passages, for generator
tests: rag's default templates, the generator's own token counter and style."""

from __future__ import annotations

from typing import Any

from rag.config import Settings
from rag.generate.factory import templates_from_settings
from rag.prompt import Prompt, PromptBuilder
from rag.records import Hit


def prompt_for(generator: Any, question: str, passages: list[tuple[str, str]]) -> Prompt:
    """`passages`: (document id, text), best first."""
    hits = [Hit(text, 1.0 - i / 10, doc, f"corpora/{doc}", {"ordinal": 0, "title": doc}, i)
            for i, (doc, text) in enumerate(passages)]
    builder = PromptBuilder(templates_from_settings(Settings.load(environ={})), generator.count_tokens, 2048, 16)
    return builder.build(question, hits, generator.style)
