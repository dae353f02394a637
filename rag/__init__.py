"""rag: retrieval-augmented question answering over a company's own documents.

The public names are imported on first use (PEP 562), so that `rag --help` and `rag config`
do not pay for the engine's imports (torch, FAISS, the parsers) before a command needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from rag.errors import (
    ConfigError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IngestError,
    RagError,
)

if TYPE_CHECKING:
    from rag.cluster.ray_indexing import RayOptions
    from rag.config import Settings
    from rag.engine import Engine
    from rag.indexing import IndexReport
    from rag.records import Chunk, Document, Hit, Section

__version__ = "0.1.0"

_LAZY = {
    "Settings": "rag.config", "Engine": "rag.engine", "IndexReport": "rag.indexing",
    "Chunk": "rag.records", "Document": "rag.records", "Hit": "rag.records", "Section": "rag.records",
    "RayOptions": "rag.cluster.ray_indexing",
}

__all__ = [
    "Chunk", "ConfigError", "Document", "Engine", "Hit", "IndexCorruptError", "IndexLockedError",
    "IndexMismatchError", "IndexNotFoundError", "IndexReport", "IngestError", "RagError", "RayOptions", "Section",
    "Settings", "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
