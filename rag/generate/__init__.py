"""Generators: one interface for a local Hugging Face model, an OpenAI-compatible server, and
an extractive answerer that needs no LLM at all."""

from rag.generate.base import Generation, Generator, GeneratorError

__all__ = ["Generation", "Generator", "GeneratorError"]
