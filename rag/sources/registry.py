"""A declared source opened as the module that reads its kind of URL: one line per kind."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from rag.errors import ConfigError
from rag.sources.base import Source
from rag.sources.objects import ObjectSource
from rag.sources.settings import SourceSettings

# URL scheme -> "module:class" taking the SourceSettings; imported only when a source uses it.
KINDS: dict[str, str] = {
    "git+file": "rag.sources.git:GitSource",
    "git+https": "rag.sources.git:GitSource",
    "git+http": "rag.sources.git:GitSource",
    "http": "rag.sources.web:WebSource",
    "https": "rag.sources.web:WebSource",
    "confluence+https": "rag.sources.confluence:ConfluenceSource",
    "confluence+http": "rag.sources.confluence:ConfluenceSource",
}


def _object_source(declared: SourceSettings) -> Source:
    return ObjectSource(declared.name, declared.url, declared.fsspec_options())


def open_source(declared: SourceSettings) -> Source:
    """The source a `[[sources]]` table declares: Git, web sites and Confluence by their modules,
    object storage and file servers (s3://, sftp://, webdav://, file://, ...) through fsspec."""
    scheme = declared.url.partition("://")[0].lower()
    opener: Callable[[SourceSettings], Source] = _object_source
    if scheme in KINDS:
        module, _, name = KINDS[scheme].partition(":")
        try:
            opener = getattr(import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"source {declared.name!r}: {scheme}:// sources are not available ({exc})") from None
    return opener(declared)
