"""A declared source opened as the module that reads its kind of URL."""

from __future__ import annotations

from rag.sources.base import Source
from rag.sources.objects import ObjectSource
from rag.sources.settings import SourceSettings


def open_source(declared: SourceSettings) -> Source:
    """The source a `[[sources]]` table declares (object storage and file servers through fsspec)."""
    return ObjectSource(declared.name, declared.url, declared.fsspec_options())
