"""manifest.json: what an index version was built with, so a mismatch is caught on open."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from rag.errors import IndexCorruptError, IndexMismatchError

# 2: documents are (collection, doc_id) and remember their origin. 3: a version is a list of
# segments (rag.index.segments). Older formats are read as they are and migrated by the next write.
FORMAT_VERSION = 3
MANIFEST_FILE = "manifest.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# The first format whose versions are lists of segments.
SEGMENTED_FORMAT = 3


class SegmentRecord(BaseModel):
    """One segment as a version's manifest names it (rag.index.segments)."""

    model_config = ConfigDict(extra="allow")

    name: str
    chunks: int  # live rows it holds
    masked: int = 0  # vectors it holds that no row owns (an HNSW index removes none in place)
    vectors: int
    dimension: int | None = None
    files: dict[str, dict[str, Any]] = {}  # file name -> {"bytes", "sha256"}


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    version: int
    created_at: str
    updated_at: str
    embedding: dict[str, Any]
    chunking: dict[str, Any]
    index: dict[str, Any]
    counts: dict[str, int]
    # Format 2 and older: the version folder's own files. Format 3: none (they are the segments').
    files: dict[str, dict[str, Any]] = {}
    # Format 3 (absent before): the segments, oldest first; the trained template IVF indexes start
    # from; the ids and segment number the next write continues from.
    segments: list[SegmentRecord] = []
    template: str | None = None
    template_files: dict[str, dict[str, Any]] = {}
    next_chunk_id: int = 1
    next_segment: int = 1

    @property
    def segmented(self) -> bool:
        return self.format_version >= SEGMENTED_FORMAT

    def parts(self) -> list[SegmentRecord]:
        """The segments it names, and its training template as a record of the same shape."""
        if not self.segmented:
            return []
        template = [SegmentRecord(name=self.template, chunks=0, vectors=0, files=self.template_files)] \
            if self.template else []
        return [*self.segments, *template]

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        path = directory / MANIFEST_FILE
        try:
            manifest = cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise IndexCorruptError(f"{path} is missing; run `rag check` or rebuild the index") from None
        except (json.JSONDecodeError, ValidationError) as exc:
            raise IndexCorruptError(f"{path} cannot be read ({exc}); rebuild the index") from None
        except UnicodeDecodeError:
            raise IndexCorruptError(f"{path} is not UTF-8 text, so not a manifest rag wrote; run `rag check`, "
                                    "or rebuild the index") from None
        except OSError as exc:
            raise IndexCorruptError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions, "
                                    "or rebuild the index") from None
        if manifest.format_version > FORMAT_VERSION:
            raise IndexMismatchError(
                f"{path}: index format {manifest.format_version} is newer than this rag understands "
                f"({FORMAT_VERSION}); upgrade rag"
            )
        return manifest

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_FILE
        path.write_text(json.dumps(self.as_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def as_json(self) -> dict[str, Any]:
        """What manifest.json holds: a format-2 manifest without the segment fields it never had."""
        data = self.model_dump(mode="json")
        if not self.segmented:
            for name in ("segments", "template", "template_files", "next_chunk_id", "next_segment"):
                data.pop(name, None)
        return data


def check_embedding(index_dir: Path, recorded: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to mix vectors of different models or settings: results would be silently wrong."""
    diffs = [f"{key}: index has {recorded.get(key)!r}, settings give {current[key]!r}"
             for key in ("model", "dimension", "normalize", "query_prefix", "passage_prefix")
             if recorded.get(key) != current[key]]
    if diffs:
        folder = recorded.get("model_path")  # a re-embed's (rag.indexing.reembed)
        advice = (f"It was re-embedded with the model in {folder}: set embedding.model = {folder!r}"
                  if folder and recorded.get("model") != current["model"] else "Use the settings it was built with")
        raise IndexMismatchError(
            f"index {index_dir} was built with another embedding configuration ({'; '.join(diffs)}). "
            f"{advice}, or rebuild it into a new --index folder."
        )


def check_chunking(index_dir: Path, recorded: dict[str, Any], current: dict[str, Any]) -> None:
    diffs = [f"{key}: index has {recorded.get(key)!r}, settings give {value!r}"
             for key, value in current.items() if recorded.get(key) != value]
    if diffs:
        raise IndexMismatchError(
            f"index {index_dir} was chunked with other settings ({'; '.join(diffs)}); adding documents "
            "chunked differently would mix two chunkings. Use the same settings or a new --index folder."
        )
