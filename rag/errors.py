"""One error hierarchy, each message written for the person who has to act on it."""

from __future__ import annotations


class RagError(Exception):
    """Base of every error rag raises on purpose; the CLI prints its message and exits 1."""


class ConfigError(RagError):
    """A setting is unknown or out of range."""


class _DocumentProblem(RagError):
    """A problem with one input; `where` narrows it inside a file (e.g. "kb.jsonl line 12")."""

    def __init__(self, reason: str, where: str | None = None) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.where = where


class IngestError(_DocumentProblem):
    """A file could not be turned into a document (unreadable, encrypted, corrupt, binary)."""


class SkipDocument(_DocumentProblem):
    """A file holds nothing to index (empty, unsupported type); not a failure."""


class IndexNotFoundError(RagError):
    """No index exists at the given path."""


class IndexMismatchError(RagError):
    """The index was built with another embedding model or settings than the ones in use."""


class IndexCorruptError(RagError):
    """The files of an index version disagree with each other or cannot be read."""


class IndexLockedError(RagError):
    """Another process holds the index's write lock."""


class EvalDataError(_DocumentProblem):
    """An evaluation set (BEIR folder, SQuAD JSON, question JSONL) is missing or malformed."""
