"""Segments: the immutable parts an index version is made of.

    <index>/segments/s000007/   chunks.sqlite   documents, chunks and tombstones written by one write
                                vectors.faiss   the vectors of its chunks (absent when it has none)
                                vectors.ivfdata an IVF index's lists, kept on disk (index.ondisk_bytes)
                                postings.*      BM25 postings of its chunks (absent when it has none)
    <index>/segments/t000003/   trained.faiss   an empty index holding IVF/PQ training, shared by all

A write adds one segment; a merge folds several into one, leaving out the rows their version's
tombstones name. Segments are written into a staging folder, fsynced, and renamed into place
before any version names them, and are deleted only once no version on disk names them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from rag.errors import IndexCorruptError
from rag.index.manifest import Manifest, SegmentRecord
from rag.index.schema import CHUNK_COLUMNS, CHUNKS_FILE, DOCUMENT_COLUMNS, create_tables, quoted
from rag.idsets import members
from rag.index.shards import ShardedIndex, split
from rag.index.vectors import ON_DISK_FILE, VECTORS_FILE, VectorIndex
from rag.lexical import deserialize_tokens
from rag.lexical.postings import FILES as POSTINGS_FILES, Postings

log = logging.getLogger(__name__)

SEGMENTS_DIR = "segments"
TEMPLATE_FILE = "trained.faiss"
SEGMENT_NAME = re.compile(r"^[st](\d{6,})$")
# Vectors made again for the rows of a staging chunks.sqlite, and their chunk ids (a re-embed).
Reembed = Callable[[Path], tuple[np.ndarray, np.ndarray]]


def segment_name(number: int, kind: str = "s") -> str:
    return f"{kind}{number:06d}"


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> dict[str, Any]:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


@dataclass
class Segment:
    """One committed segment, opened for reading: its vectors, BM25 postings and vector ids."""

    name: str
    directory: Path
    vectors: VectorIndex | ShardedIndex | None
    postings: Postings | None
    ids: np.ndarray  # the chunk ids its vectors hold, ascending

    @classmethod
    def open(cls, directory: Path, record: SegmentRecord, factory: str, use_gpu: bool,
             tokenizer_settings: dict[str, Any], shards: int = 1) -> "Segment":
        """Load a committed segment; with `shards` > 1 a large Flat or IVF index is split (rag.index.shards)."""
        files = record.files
        vectors = VectorIndex.load(directory / VECTORS_FILE, factory, use_gpu) if VECTORS_FILE in files else None
        postings = Postings.load(directory, tokenizer_settings) if POSTINGS_FILES[0] in files else None
        ids = np.sort(vectors.contains_ids()) if vectors is not None else np.zeros(0, np.int64)
        if vectors is not None and vectors.ntotal != record.vectors:
            raise IndexCorruptError(f"{directory}: the manifest says {record.vectors} vectors, FAISS holds "
                                    f"{vectors.ntotal}; run `rag check`, or rebuild the index")
        if vectors is not None and shards > 1:
            vectors = split(vectors, shards)  # type: ignore[assignment]
        return cls(record.name, directory, vectors, postings, ids)

    def holds(self, ids: np.ndarray) -> np.ndarray:
        """Those of `ids` (ascending) whose vectors this segment holds."""
        return members(ids, self.ids)


# A segment a search visits costs about 40 µs of FAISS and NumPy calls, and a dict lookup and
# array slices per query term for BM25, however few chunks it holds: ten segments of a thousand
# chunks searched one by one took 0.4-0.8 ms longer than one. So a reader searches its small
# segments as one, copied together when it opens the version; the copy is bounded, since only
# segments of up to SMALL_SEGMENT_BYTES of vectors are joined, JOINED_BYTES at most in a group.
SMALL_SEGMENT_BYTES = 16 << 20
JOINED_BYTES = 64 << 20


def search_groups(segments: list[Segment]) -> list[list[int]]:
    """Positions in `segments` to search together: small segments (and those holding only
    tombstones) in groups, the others alone."""
    groups: list[list[int]] = []
    joined, size = [], 0
    for i, segment in enumerate(segments):
        vectors = segment.vectors
        bytes_ = 4 * vectors.ntotal * vectors.dimension if vectors is not None else 0
        if bytes_ > SMALL_SEGMENT_BYTES:
            groups.append([i])
            continue
        if size + bytes_ > JOINED_BYTES:
            groups.append(joined)
            joined, size = [], 0
        joined.append(i)
        size += bytes_
    if joined:
        groups.append(joined)
    return groups


def joined_vectors(parts: list[Segment], dead: np.ndarray, use_gpu: bool) -> Segment | None:
    """One flat index of the live vectors of `parts` (flat indexes), or None where they are not flat.

    Only flat indexes are joined: their vectors copy exactly and need no training, where an IVF
    or PQ index would re-encode reconstructed vectors and HNSW would rebuild its graph.
    """
    indexes = [p.vectors for p in parts if p.vectors is not None]
    if not indexes or not all(v.exhaustive for v in indexes):
        return None
    joined = VectorIndex.create(indexes[0].factory, indexes[0].dimension, use_gpu)
    live_ids = []
    for part in parts:
        if part.vectors is None:
            continue
        live = np.setdiff1d(part.ids, dead, assume_unique=True)
        joined.add(part.vectors.reconstruct(live), live)
        live_ids.append(live)
    ids = np.sort(np.concatenate(live_ids))
    return Segment("+".join(p.name for p in parts), parts[0].directory, joined, None, ids)


def finish_segment(staging: Path, final: Path, vectors: VectorIndex | None, postings: Postings | None,
                   name: str) -> SegmentRecord:
    """Save a segment's vectors and postings beside its chunks.sqlite, fsync everything and
    rename the folder into place; returns its manifest record."""
    conn = sqlite3.connect(f"file:{staging / CHUNKS_FILE}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        masked = conn.execute("SELECT COUNT(*) FROM masked").fetchone()[0]
    finally:
        conn.close()
    ntotal = vectors.ntotal if vectors is not None else 0
    if ntotal != rows + masked:
        raise IndexCorruptError(f"internal error: segment {name} has {rows} chunks and {masked} masked vectors "
                                f"but {ntotal} vectors; nothing was committed")
    if ntotal:
        vectors.save(staging / VECTORS_FILE)  # type: ignore[union-attr]
    if postings is not None and len(postings):
        postings.save(staging)
    files = {entry.name: file_digest(entry) for entry in sorted(staging.iterdir()) if entry.is_file()}
    for entry in staging.iterdir():
        fsync_path(entry)
    fsync_path(staging)
    os.replace(staging, final)
    fsync_path(final.parent)
    return SegmentRecord(name=name, chunks=int(rows), masked=int(masked), vectors=int(ntotal),
                         dimension=vectors.dimension if vectors is not None else None, files=files)


def plan_merges(sizes: list[int], max_segments: int) -> list[tuple[int, int]]:
    """Runs of adjacent segments (start, end) to merge so that at most `max_segments` remain:
    each time the adjacent pair with the fewest rows, so a write into a big index merges small
    segments with each other and rarely rewrites a big one (the cost of a merge is its size)."""
    runs = [[i, i + 1, size] for i, size in enumerate(sizes)]
    while len(runs) > max(1, max_segments):
        best = min(range(len(runs) - 1), key=lambda i: (runs[i][2] + runs[i + 1][2], i))
        runs[best:best + 2] = [[runs[best][0], runs[best + 1][1], runs[best][2] + runs[best + 1][2]]]
    return [(start, end) for start, end, _ in runs if end - start > 1]


def merge_segments(root: Path, version: list[SegmentRecord], merged: list[SegmentRecord], name: str,
                   factory: str, template: Path | None, retokenize: Callable[[str], str] | None,
                   train_sample: int, tokenizer_settings: dict[str, Any], ondisk_bytes: int = 0,
                   reembed: Reembed | None = None) -> SegmentRecord:
    """A new segment `name` holding the live rows of the `merged` records (a run of `version`'s
    segments) and their vectors, and the tombstones they carry that still name a row of a
    segment outside the run. With `retokenize`, BM25 tokens are made again from the texts; with
    `reembed`, the vectors are made again from them (another embedding model) instead of copied."""
    staging = root / f".staging-{name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    merged_names = {r.name for r in merged}
    conn = sqlite3.connect(str(staging / CHUNKS_FILE))
    try:
        rows = _MergedRows(conn, root)
        rows.copy(version, merged, [r.name for r in version if r.name not in merged_names])
        if retokenize is not None:
            texts = conn.execute("SELECT id, text FROM main.chunks").fetchall()
            conn.executemany("UPDATE main.chunks SET tokens = ? WHERE id = ?", ((retokenize(t), i) for i, t in texts))
        conn.commit()
        live = np.fromiter((r[0] for r in conn.execute("SELECT id FROM main.chunks ORDER BY id")), dtype=np.int64)
        postings = Postings.build(live, (deserialize_tokens(r[0]) for r in conn.execute(
            "SELECT tokens FROM main.chunks ORDER BY id")), tokenizer_settings)
    finally:
        conn.close()
    if reembed is not None:
        vectors = _embedded_vectors(reembed(staging / CHUNKS_FILE), factory, train_sample)
    else:
        vectors = _merged_vectors(root, merged, live, factory, template, train_sample, ondisk_bytes, staging)
    return finish_segment(staging, root / name, vectors, postings, name)


class _MergedRows:
    """The rows of a merge's staging chunks.sqlite, copied from its segments one attached at a
    time: a version may have more segments than SQLite attaches at once (a write adds one to
    index.max_segments before merging)."""

    def __init__(self, conn: sqlite3.Connection, root: Path) -> None:
        self.conn = conn
        self.root = root
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        create_tables(conn)
        conn.execute("CREATE TEMP TABLE gone_chunks (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TEMP TABLE gone_documents (segment TEXT, collection TEXT, doc_id TEXT, "
                     "PRIMARY KEY (segment, collection, doc_id)) WITHOUT ROWID")
        conn.execute("CREATE TEMP TABLE carried_chunks (id INTEGER PRIMARY KEY)")

    @contextlib.contextmanager
    def attached(self, segment: str) -> Iterator[None]:
        """The segment attached as `s`. SQLite detaches only outside a transaction, hence the
        commit (of a staging file)."""
        self.conn.execute("ATTACH DATABASE ? AS s", (f"file:{self.root / segment / CHUNKS_FILE}?mode=ro&immutable=1",))
        try:
            yield
        finally:
            self.conn.commit()
            self.conn.execute("DETACH DATABASE s")

    def copy(self, version: list[SegmentRecord], merged: list[SegmentRecord], outside: list[str]) -> None:
        conn = self.conn
        for record in version:
            with self.attached(record.name):
                conn.execute("INSERT OR IGNORE INTO gone_chunks SELECT id FROM s.deleted_chunks")
                conn.execute("INSERT OR IGNORE INTO gone_documents SELECT * FROM s.deleted_documents")
        top = 0
        names = ", ".join(quoted(n) for n in outside)
        for record in merged:
            with self.attached(record.name):
                top = max(top, self._copy_live(record.name, names))
        for segment in outside:
            with self.attached(segment):
                # EXISTS looks each id up; `id IN (SELECT id FROM ...)` built a set of every id there.
                conn.execute("INSERT OR IGNORE INTO main.deleted_chunks SELECT t.id FROM carried_chunks t "
                             "WHERE EXISTS (SELECT 1 FROM s.chunks c WHERE c.id = t.id)")
        conn.execute("DELETE FROM main.sqlite_sequence WHERE name = 'chunks'")
        conn.execute("INSERT INTO main.sqlite_sequence (name, seq) VALUES ('chunks', ?)", (top,))

    def _copy_live(self, segment: str, outside: str) -> int:
        """The attached segment's live rows, and its tombstones against segments outside the run;
        returns the highest chunk id it ever gave."""
        conn = self.conn
        conn.execute(f"INSERT INTO main.documents ({DOCUMENT_COLUMNS}) SELECT {DOCUMENT_COLUMNS} FROM s.documents d "
                     f"WHERE NOT EXISTS (SELECT 1 FROM gone_documents g WHERE g.segment = {quoted(segment)} "
                     "AND g.collection = d.collection AND g.doc_id = d.doc_id)")
        conn.execute(f"INSERT INTO main.chunks ({CHUNK_COLUMNS}) SELECT {CHUNK_COLUMNS} FROM s.chunks "
                     "WHERE id NOT IN (SELECT id FROM gone_chunks)")
        # Tombstones against segments the merge leaves alone still apply to them.
        if outside:
            conn.execute(f"INSERT OR IGNORE INTO main.deleted_documents SELECT * FROM s.deleted_documents "
                         f"WHERE segment IN ({outside})")
        conn.execute("INSERT OR IGNORE INTO carried_chunks SELECT id FROM s.deleted_chunks")
        row = conn.execute("SELECT seq FROM s.sqlite_sequence WHERE name = 'chunks'").fetchone()
        return int(row[0]) if row else 0


def _merged_vectors(root: Path, merged: list[SegmentRecord], live: np.ndarray, factory: str,
                    template: Path | None, train_sample: int, ondisk_bytes: int, staging: Path) -> VectorIndex | None:
    sources = [VectorIndex.load(root / record.name / VECTORS_FILE, factory, use_gpu=False)
               for record in merged if record.vectors]
    if template is not None and sources and all(source.is_ivf for source in sources):
        # IVF (with PQ): the segments' stored codes are moved as they are, less the dead vectors.
        index = VectorIndex.load(template, factory, use_gpu=False)
        large = ondisk_bytes and len(live) * index.list_bytes_per_vector > ondisk_bytes
        index.absorb(sources, live, staging / ON_DISK_FILE if large else None)
        return index if index.ntotal else None
    parts, part_ids = [], []
    for source in sources:
        held = np.intersect1d(source.contains_ids(), live)
        if len(held):
            parts.append(source.reconstruct(held))
            part_ids.append(held)
    if not parts:
        return None
    vectors, ids = np.concatenate(parts), np.concatenate(part_ids)
    index = VectorIndex.load(template, factory, use_gpu=False) if template is not None else \
        VectorIndex.create(factory, vectors.shape[1], use_gpu=False)
    if not index.is_trained:
        index.train(vectors[:train_sample])
    index.add(vectors, ids)
    return index


def _embedded_vectors(embedded: tuple[np.ndarray, np.ndarray], factory: str, train_sample: int) -> VectorIndex | None:
    """A new index of `factory` over vectors made again (a re-embed), trained on them where it needs training."""
    vectors, ids = embedded
    if not len(ids):
        return None
    index = VectorIndex.create(factory, vectors.shape[1], use_gpu=False)
    if not index.is_trained:
        index.train(vectors[:train_sample])
    index.add(vectors, ids)
    return index


def version_problems(manifest: Manifest, segments: list[Segment]) -> list[str]:
    """Where the manifest and the FAISS indexes of a version's segments disagree (empty when they agree)."""
    problems = []
    dimension = manifest.embedding.get("dimension")
    metric = manifest.index.get("metric", "inner_product")
    for segment in segments:
        vectors = segment.vectors
        if vectors is None:
            continue
        where = "" if segment.name == "legacy" else f"segment {segment.name}: "
        if dimension != vectors.dimension:
            problems.append(f"{where}the manifest says embedding dimension {dimension}, FAISS holds "
                            f"{vectors.dimension}-dimensional vectors")
        if metric != vectors.metric:
            problems.append(f"{where}the manifest says metric {metric}, FAISS uses {vectors.metric}")
    count = manifest.counts.get("vectors")
    held = sum(s.vectors.ntotal for s in segments if s.vectors is not None)
    if count is not None and count != held:
        problems.append(f"the manifest says {count} vectors, FAISS holds {held}")
    return problems
