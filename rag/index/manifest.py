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
    files: dict[str, dict[str, Any]] = {}

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
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def check_embedding(index_dir: Path, recorded: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to mix vectors of different models or settings: results would be silently wrong."""
    diffs = [f"{key}: index has {recorded.get(key)!r}, settings give {current[key]!r}"
             for key in ("model", "dimension", "normalize", "query_prefix", "passage_prefix")
             if recorded.get(key) != current[key]]
    if diffs:
        raise IndexMismatchError(
            f"index {index_dir} was built with another embedding configuration ({'; '.join(diffs)}). "
            "Use the settings it was built with, or rebuild it into a new --index folder."
        )


def check_chunking(index_dir: Path, recorded: dict[str, Any], current: dict[str, Any]) -> None:
    diffs = [f"{key}: index has {recorded.get(key)!r}, settings give {value!r}"
             for key, value in current.items() if recorded.get(key) != value]
    if diffs:
        raise IndexMismatchError(
            f"index {index_dir} was chunked with other settings ({'; '.join(diffs)}); adding documents "
            "chunked differently would mix two chunkings. Use the same settings or a new --index folder."
        )
