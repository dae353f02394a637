"""Names that settings, engine, service and clients share, each defined once, below them all."""

from __future__ import annotations

from typing import Literal, get_args

# How a question is searched: both retrievers fused, or one of them alone.
SearchMode = Literal["hybrid", "dense", "bm25"]
SEARCH_MODES: tuple[SearchMode, ...] = get_args(SearchMode)

# The generators an answer can come from.
GeneratorName = Literal["local", "openai", "extractive"]
GENERATOR_NAMES: tuple[GeneratorName, ...] = get_args(GeneratorName)
