"""Turn files into Documents: find them, pick a loader by extension, report what failed."""

from rag.ingest.discover import SourceFile, discover
from rag.ingest.loaders import LOADERS, load_source, supported_extensions

__all__ = ["LOADERS", "SourceFile", "discover", "load_source", "supported_extensions"]
