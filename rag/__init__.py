"""rag: retrieval-augmented question answering over a company's own documents."""

from rag.config import Settings
from rag.engine import Engine
from rag.errors import (
    ConfigError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IngestError,
    RagError,
)
from rag.indexing import IndexReport
from rag.records import Chunk, Document, Hit, Section

__version__ = "0.1.0"

__all__ = [
    "Chunk", "ConfigError", "Document", "Engine", "Hit", "IndexCorruptError", "IndexLockedError",
    "IndexMismatchError", "IndexNotFoundError", "IndexReport", "IngestError", "RagError", "Section",
    "Settings", "__version__",
]
