"""Making a write's changes the live version, all at once or not at all.

The new segment is fsynced and renamed into place (rag.index.segments.finish_segment), merges
run as the policy says, then the version's manifest is written into a staging folder, fsynced,
renamed to its version name, and only then is CURRENT replaced (a temporary file, fsync, rename,
fsync of the folder). A process killed at any moment leaves CURRENT naming a complete version.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

from rag.config import IndexSettings
from rag.errors import IndexCorruptError
from rag.index.folder import CURRENT_FILE, IndexFolder, version_name
from rag.index.manifest import FORMAT_VERSION, Manifest, SegmentRecord, utc_now
from rag.index.segments import (TEMPLATE_FILE, Reembed, file_digest, fsync_path, merge_segments, plan_merges,
                                segment_name)
from rag.index.vectors import VectorIndex

log = logging.getLogger(__name__)


def publish(folder: IndexFolder, number: int, manifest: Manifest) -> str:
    """Write the version's manifest and make it the live version; returns its name."""
    name = version_name(number)
    log.info("stage: syncing files to disk")
    staging = folder.path / f".staging-{name}-{os.getpid()}"
    staging.mkdir()
    fsync_path(manifest.write(staging))
    fsync_path(staging)
    os.replace(staging, folder.path / name)
    fsync_path(folder.path)
    log.info("stage: swapping CURRENT to %s", name)
    tmp = folder.path / (CURRENT_FILE + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder.path / CURRENT_FILE)
    fsync_path(folder.path)
    log.info("stage: committed %s", name)
    return name


def retire_old_versions(folder: IndexFolder, current: str, keep: int) -> None:
    """Delete all but the `keep` versions before `current` (their segments go once unnamed)."""
    older = [v for v in folder.versions() if int(v[1:]) < int(current[1:])]
    for name in older[: max(0, len(older) - keep)]:
        shutil.rmtree(folder.path / name, ignore_errors=True)


def save_template(folder: IndexFolder, number: int, vectors: VectorIndex) -> tuple[str, dict[str, Any]]:
    """The trained, empty index later segments start from, in a folder of its own; returns its
    name and its file's checksum, which goes into every manifest for `rag check`."""
    name = segment_name(number, "t")
    staging = folder.segments_root / f".staging-{name}-{os.getpid()}"
    staging.mkdir()
    vectors.empty_copy().save(staging / TEMPLATE_FILE)
    files = {TEMPLATE_FILE: file_digest(staging / TEMPLATE_FILE)}
    fsync_path(staging / TEMPLATE_FILE)
    fsync_path(staging)
    os.replace(staging, folder.segments_root / name)
    return name, files


def merge_as_planned(folder: IndexFolder, records: list[SegmentRecord], next_segment: int, everything: bool,
                     template: Any, retokenize: Callable[[str], str] | None,
                     tokenizer_settings: dict[str, Any],
                     reembed: Reembed | None = None) -> tuple[list[SegmentRecord], int]:
    """Merge segments as the policy says (or all of them: `rag compact`, new BM25 tokenizer
    settings, a re-embed with `reembed`); returns the version's segments and the next segment number."""
    settings: IndexSettings = folder.settings
    if everything:
        runs = [(0, len(records))]
    else:
        runs = plan_merges([r.chunks + r.masked for r in records], settings.max_segments)
    if not runs:
        return records, next_segment
    out: list[SegmentRecord] = []
    at = 0
    for start, end in runs:
        out.extend(records[at:start])
        name = segment_name(next_segment)
        next_segment += 1
        log.info("stage: merging %d segments into %s", end - start, name)
        out.append(merge_segments(folder.segments_root, records, records[start:end], name, settings.factory,
                                  template, retokenize, settings.train_sample, tokenizer_settings,
                                  settings.ondisk_bytes, reembed))
        at = end
    out.extend(records[at:])
    return out, next_segment


def version_counts(base: dict[str, int], written: dict[str, int], records: list[SegmentRecord]) -> dict[str, int]:
    """The new version's counts: the base version's plus what the new segment added less what it
    tombstoned (counting a million rows through the segments' views took most of a one-document
    write's time), checked against the vectors its segments hold."""
    counts = {"documents": base.get("documents", 0) + written["added.documents"] - written["deleted.documents"],
              "chunks": base.get("chunks", 0) + written["added.chunks"] - written["deleted.chunks"]}
    counts["vectors"] = sum(r.vectors for r in records)
    counts["masked"] = counts["vectors"] - counts["chunks"]
    # Dead vectors only ever grow by what this write hid (merges drop some): more is a miscount.
    most = base.get("masked", 0) + written["deleted.chunks"] + written["masked"]
    if not 0 <= counts["masked"] <= most or min(counts["documents"], counts["chunks"]) < 0:
        raise IndexCorruptError(f"internal error: {counts['chunks']} chunks, {counts['vectors']} vectors and "
                                f"{counts['documents']} documents do not add up; nothing was committed")
    return counts


def new_manifest(number: int, base: Manifest | None, embedding: dict[str, Any], chunking: dict[str, Any],
                 index: dict[str, Any], counts: dict[str, int], records: list[SegmentRecord],
                 template: str | None, template_files: dict[str, Any], next_id: int,
                 next_segment: int) -> Manifest:
    now = utc_now()
    return Manifest(format_version=FORMAT_VERSION, version=number, created_at=base.created_at if base else now,
                    updated_at=now, embedding=embedding, chunking=chunking, index=index, counts=counts, files={},
                    segments=records, template=template, template_files=template_files, next_chunk_id=next_id,
                    next_segment=next_segment)


# What a re-embed records of its model beside Embedder.identity(): kept by later writes with that model.
MODEL_RECORD = ("model_sha256", "model_path")


def recorded_embedding(base: Manifest | None, embedding: dict[str, Any]) -> dict[str, Any]:
    """The embedding a new version records: the writer's, with the model's hash and folder the
    base version recorded (a re-embed's) while the model is the same."""
    if base is None or base.embedding.get("model") != embedding.get("model"):
        return embedding
    return {**{k: base.embedding[k] for k in MODEL_RECORD if k in base.embedding}, **embedding}


def faiss_version() -> str:
    import faiss

    return str(getattr(faiss, "__version__", "unknown"))
