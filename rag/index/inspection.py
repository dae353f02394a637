"""What an index says about itself: `rag check` (is every part there and consistent?) and
`rag info` (what the live version holds, and its size on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexNotFoundError, RagError
from rag.index import legacy
from rag.index.chunkstore import ChunkStore
from rag.index.folder import IndexFolder
from rag.index.manifest import Manifest
from rag.index.reader import IndexReader
from rag.index.schema import CHUNKS_FILE
from rag.index.segments import file_digest, version_problems
from rag.index.vectors import ON_DISK_FILE, VECTORS_FILE
from rag.index.views import open_segments
from rag.records import CheckReport, IndexInfo, SegmentSummary


def live_version(folder: IndexFolder) -> str:
    """The live version's name; the not-found error, with its hint, when there is none."""
    name = folder.current_version()
    if name is None:
        raise IndexNotFoundError(f"no index at {folder.path}; build one with `rag index PATH --index {folder.path}`")
    return name


def open_rows(folder: IndexFolder, name: str) -> ChunkStore:
    """A version's documents and chunks alone, read-only: for counts and listings that need no
    vectors (loading every segment's FAISS index to count collections would cost seconds)."""
    directory = folder.path / name
    manifest = Manifest.read(directory)
    if not manifest.segmented:
        return legacy.open_rows(directory / CHUNKS_FILE)
    return open_segments([(r.name, folder.segments_root / r.name / CHUNKS_FILE) for r in manifest.segments])


def describe(folder: IndexFolder) -> IndexInfo:
    """The manifest of the live version, with counts, its segments and size on disk."""
    name = live_version(folder)
    manifest = Manifest.read(folder.path / name)
    files: dict[str, int] = {}
    for file, (path, _) in folder.version_files(name).items():
        base = file.rsplit("/", 1)[-1]
        if base in (CHUNKS_FILE, VECTORS_FILE, ON_DISK_FILE):
            files[base] = files.get(base, 0) + path.stat().st_size
    rows = open_rows(folder, name)
    try:
        collections = rows.catalog.collection_counts()
    finally:
        rows.close()
    return IndexInfo(path=str(folder.path), version=name, disk_bytes=folder.disk_bytes(), files=files,
                     segments=[SegmentSummary(r.name, r.chunks, r.masked, r.vectors) for r in manifest.segments],
                     masked=int(manifest.counts.get("masked", 0)), collections=collections,
                     manifest=manifest.as_json())


def check(folder: IndexFolder) -> CheckReport:
    """Problems with the live version (none when sound): every file of it (the manifest's, and
    each segment's) is there with its checksum, the manifest agrees with FAISS, and ids agree
    everywhere, segment by segment."""
    try:
        name = live_version(folder)
        manifest = Manifest.read(folder.path / name)
        files = folder.version_files(name)
    except RagError as exc:
        return CheckReport([str(exc)])
    problems = _file_problems(files)
    if problems:
        return CheckReport(problems)
    try:
        opened = IndexReader(folder.path / name, folder.settings, folder.use_gpu(), folder)
    except RagError as exc:
        return CheckReport([str(exc)])
    try:
        problems.extend(version_problems(opened.manifest, opened.segments))
        problems.extend(opened.chunks.integrity_problems())
        counts = opened.chunks.catalog.counts()
        for kind in ("documents", "chunks"):
            if counts[kind] != manifest.counts.get(kind):
                problems.append(f"{counts[kind]} {kind} in SQLite, manifest says {manifest.counts.get(kind)}")
        problems.extend(_id_problems(opened))
    finally:
        opened.close()
    return CheckReport(problems)


def _file_problems(files: dict[str, tuple[Path, dict[str, Any] | None]]) -> list[str]:
    problems: list[str] = []
    for file, (path, expected) in files.items():
        try:
            actual = file_digest(path)
        except FileNotFoundError:
            problems.append(f"{file} is missing from {path.parent}")
            continue
        except OSError as exc:
            problems.append(f"{file} cannot be read ({exc.strerror or exc})")
            continue
        if actual != expected:
            problems.append(f"{file}: size or checksum differs from the manifest")
    return problems


def _id_problems(reader: IndexReader) -> list[str]:
    """Where FAISS, the chunk rows and BM25 disagree about which chunk ids exist."""
    problems = []
    seen: set[int] = set()
    for segment in reader.segments:
        ids = segment.vectors.contains_ids() if segment.vectors is not None else np.zeros(0, np.int64)
        if len(set(ids.tolist())) != len(ids):
            problems.append(f"segment {segment.name}: FAISS holds duplicate ids")
        if seen & set(ids.tolist()):
            problems.append(f"segment {segment.name}: FAISS holds ids another segment holds too")
        seen |= set(ids.tolist())
    masked = set(int(i) for i in reader.masked)
    faiss_ids = seen - masked
    chunk_ids = set(reader.chunks.rows.chunk_ids())
    if masked & chunk_ids:
        problems.append(f"{len(masked & chunk_ids)} masked ids still have chunks")
    if faiss_ids - chunk_ids:
        problems.append(f"{len(faiss_ids - chunk_ids)} FAISS ids have no chunk")
    if chunk_ids - faiss_ids:
        problems.append(f"{len(chunk_ids - faiss_ids)} chunks have no vector")
    if reader.lexical is not None and set(reader.lexical.ids.tolist()) != chunk_ids:
        problems.append("the BM25 index and the chunk rows hold different chunk ids")
    return problems
