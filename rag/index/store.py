"""The index folder: immutable versions made of immutable segments, a CURRENT pointer swapped
atomically, one writer.

    <index>/CURRENT          names the live version, e.g. "v000007"
    <index>/LOCK             flock()ed by the one writer; holds its process id
    <index>/v000007/         manifest.json: the version's segments (with their files' checksums),
                             settings and counts (never modified)
    <index>/segments/        the segments versions are made of (rag.index.segments)
    <index>/.staging-*/      a version being written; deleted if its writer died

A write costs what it changes, as in Lucene or Tantivy: its new documents go to a new small
segment, and what it deletes or replaces in older segments is recorded there as tombstones.
Searches run over every segment of the version and merge the results; BM25 statistics are
those of the whole version. When a version would have more than `index.max_segments`, the
writer merges the smallest neighbours; `rag compact` merges everything into one.

The writer fsyncs each new segment and renames it into place, then writes the version's
manifest into a staging folder, fsyncs it, renames it to its version name, and only then
replaces CURRENT (write a temporary file, fsync, rename, fsync the folder). A process killed at
any moment leaves CURRENT naming a complete version, so readers never see a half-written
index. Segments no kept version names are deleted by the next writer.

Versions written before segments (format 2 and older: chunks.sqlite, vectors.faiss and BM25
in the version folder) are read as they are and rewritten as one segment by the next write.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rag.config import IndexSettings
from rag.filters import Filter
from rag.errors import IndexCorruptError, IndexLockedError, IndexNotFoundError, RagError
from rag.index.chunkstore import CHUNKS_FILE, ChunkStore, SegmentedChunks, StoredDocument
from rag.index.manifest import FORMAT_VERSION, Manifest, check_chunking, check_embedding, utc_now
from rag.index.segments import (SEGMENT_NAME, SEGMENTS_DIR, TEMPLATE_FILE, Segment, file_digest, finish_segment,
                                fsync_path, joined_vectors, merge_segments, plan_merges, search_groups,
                                segment_name)
from rag.lexical import BM25Index, Tokenizer, deserialize_tokens, serialize_tokens
from rag.lexical.bm25 import FILES as BM25_FILES
from rag.lexical.segments import Postings, SegmentedBM25
from rag.index.vectors import ON_DISK_FILE, VECTORS_FILE, VectorIndex, gpu_count
from rag.records import Chunk, Document

log = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
LOCK_FILE = "LOCK"
_VERSION = re.compile(r"^v(\d{6,})$")
# The first format whose versions are lists of segments.
SEGMENTED_FORMAT = 3



def _version_name(number: int) -> str:
    return f"v{number:06d}"


# What FAISS (RuntimeError), SQLite and the OS raise when storage gives out.
STORAGE_ERRORS = (OSError, sqlite3.Error, RuntimeError)


def _disk_error(exc: BaseException, path: Path, has_previous: bool = True) -> RagError:
    text = str(exc)
    code = getattr(exc, "errno", None)
    unchanged = "the previous version is intact" if has_previous else "no index was created"
    if code == errno.ENOSPC or "No space left" in text or "disk is full" in text:
        return RagError(f"disk full while writing the index at {path}; {unchanged}. "
                        "Free some space and run again.")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "readonly" in text or "Read-only" in text:
        reason = getattr(exc, "strerror", None) or text
        return RagError(f"cannot write the index at {path} ({reason}); {unchanged}. "
                        "Check the folder's permissions or choose another --index.")
    return RagError(f"writing the index at {path} failed ({text.strip().splitlines()[-1] if text.strip() else exc!r}); "
                    f"{unchanged}")


def _not_a_folder(path: Path) -> RagError | None:
    """An index path that is (or lies under) a file: say so, rather than an OS error later."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if candidate.is_dir():
                return None
            which = "is a file" if candidate == path else f"lies under {candidate}, which is a file"
            return RagError(f"--index {path} {which}, not an index folder; name a folder (it is created "
                            "when missing), e.g. --index indexes/company")
    return None


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


def manifest_problems(manifest: Manifest, vectors: VectorIndex) -> list[str]:
    """Where the manifest and one FAISS index disagree (a version written before segments)."""
    return version_problems(manifest, [Segment("legacy", Path(), vectors, None, np.zeros(0, np.int64))])


def bm25_tokens(tokenizer: Tokenizer, chunk_text: str) -> str:
    """A chunk's BM25 tokens as stored with its row (of its embed_text)."""
    return serialize_tokens(tokenizer.tokenize(chunk_text))


def make_tokenizer(settings: IndexSettings) -> Tokenizer:
    return Tokenizer(stem=settings.bm25_stem, stopwords=None if settings.bm25_stopwords == "none" else "en",
                     chinese=settings.bm25_chinese)


def is_segmented(manifest: Manifest) -> bool:
    return manifest.format_version >= SEGMENTED_FORMAT


class IndexStore:
    """One index folder."""

    def __init__(self, path: Path, settings: IndexSettings) -> None:
        self.path = Path(path)
        self.settings = settings
        # Segments opened by this store's readers, kept for the next version's reader: after a
        # write, a server then loads only the new segment, not every segment's vectors again.
        self._open_segments: dict[tuple[str, str], Segment] = {}
        self._segments_lock = threading.Lock()

    def open_segment(self, record: dict[str, Any], tokenizer_settings: dict[str, Any]) -> Segment:
        """A committed segment, opened once per store. Keyed by its files' checksums too: a name
        comes back when an index folder is rebuilt from scratch."""
        key = (record["name"], json.dumps(record.get("files", {}), sort_keys=True))
        with self._segments_lock:
            segment = self._open_segments.get(key)
        if segment is None:
            segment = Segment.open(self.segments_root / record["name"], record, self.settings.factory, self.use_gpu(),
                                   tokenizer_settings, self.settings.shards)
            with self._segments_lock:
                segment = self._open_segments.setdefault(key, segment)
        return segment

    def forget_segments_but(self, names: set[str]) -> None:
        """Drop cached segments the newest reader does not use (older readers keep their own)."""
        with self._segments_lock:
            for key in [k for k in self._open_segments if k[0] not in names]:
                del self._open_segments[key]

    @property
    def segments_root(self) -> Path:
        return self.path / SEGMENTS_DIR

    def use_gpu(self) -> bool:
        return self.settings.device == "auto" and gpu_count() > 0

    def current_version(self) -> str | None:
        try:
            name = (self.path / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except NotADirectoryError:  # checked only when reading fails: this runs on every search
            raise _not_a_folder(self.path) or IndexCorruptError(f"{self.path} is not a folder") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise IndexCorruptError(f"{self.path / CURRENT_FILE} cannot be read ({exc}); run `rag check`, or "
                                    "rebuild the index") from None
        if not _VERSION.match(name):
            raise IndexCorruptError(f"{self.path / CURRENT_FILE} holds {name!r}, not a version name; rebuild the index")
        return name

    def exists(self) -> bool:
        return self.current_version() is not None

    def versions(self) -> list[str]:
        if not self.path.is_dir():
            return []
        names = [p.name for p in self.path.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(names, key=lambda name: int(name[1:]))

    def open_reader(self) -> "IndexReader":
        for _ in range(5):
            name = self.current_version()
            if name is None:
                raise IndexNotFoundError(f"no index at {self.path}; build one with `rag index PATH --index {self.path}`")
            try:
                return IndexReader(self.path / name, self.settings, self.use_gpu(), self)
            except IndexCorruptError:
                # A writer may have retired this version between our read of CURRENT and the open.
                if self.current_version() == name:
                    raise
        raise IndexCorruptError(f"{self.path}: CURRENT keeps changing while opening; try again")

    def open_writer(self, embedding: dict[str, Any], chunking: dict[str, Any]) -> "IndexWriter":
        return IndexWriter(self, embedding, chunking)

    def version_files(self, name: str) -> dict[str, tuple[Path, dict[str, Any] | None]]:
        """Every file the version is made of, by its name in `rag check`'s messages, with the
        size and checksum its manifest records."""
        directory = self.path / name
        manifest = Manifest.read(directory)
        files: dict[str, tuple[Path, dict[str, Any] | None]] = {
            f: (directory / f, digest) for f, digest in manifest.files.items()}
        for part in version_parts(manifest):
            for f, digest in part.get("files", {}).items():
                files[f"{part['name']}/{f}"] = (self.segments_root / part["name"] / f, digest)
        return files

    def disk_bytes(self) -> int:
        name = self.current_version()
        if name is None:
            return 0
        own = sum(p.stat().st_size for p in (self.path / name).iterdir() if p.is_file())
        return own + sum(p.stat().st_size for f, (p, _) in self.version_files(name).items() if "/" in f and p.is_file())

    def referenced_segments(self) -> set[str]:
        """Segments (and training templates) some version on disk names."""
        names: set[str] = set()
        for version in self.versions():
            try:
                manifest = Manifest.read(self.path / version)
            except RagError:
                continue
            names.update(part["name"] for part in version_parts(manifest))
        return names

    def open_rows(self, name: str) -> ChunkStore:
        """A version's documents and chunks alone, read-only: for counts and listings that need
        no vectors (`rag info` loaded every segment's FAISS index to count collections)."""
        directory = self.path / name
        manifest = Manifest.read(directory)
        if not is_segmented(manifest):
            return ChunkStore.open_readonly(directory / CHUNKS_FILE)
        return SegmentedChunks.open([(r["name"], self.segments_root / r["name"] / CHUNKS_FILE)
                                     for r in manifest.model_extra.get("segments", [])])


def version_parts(manifest: Manifest) -> list[dict[str, Any]]:
    """The segments a version names, and its training template as a record of the same shape."""
    if not is_segmented(manifest):
        return []
    extra = manifest.model_extra
    template = [{"name": extra["template"], "files": extra.get("template_files", {})}] if extra.get("template") else []
    return [*extra.get("segments", []), *template]


class IndexReader:
    """A snapshot of one committed version; stays valid while writers commit newer ones."""

    def __init__(self, directory: Path, settings: IndexSettings, use_gpu: bool,
                 store: IndexStore | None = None) -> None:
        self.directory = directory
        self.settings = settings
        self.manifest = Manifest.read(directory)
        tokenizer = make_tokenizer(settings)
        if is_segmented(self.manifest):
            root = directory.parent / SEGMENTS_DIR
            records = self.manifest.model_extra.get("segments", [])
            store = store or IndexStore(directory.parent, settings)
            self.segments = [store.open_segment(r, tokenizer.settings) for r in records]
            store.forget_segments_but({r["name"] for r in records})
            # Small segments are searched as one: their rows, vectors and postings joined.
            groups = [[self.segments[i] for i in group] for group in search_groups(self.segments)]
            self.chunks: ChunkStore = SegmentedChunks.open(
                [(r["name"], root / r["name"] / CHUNKS_FILE) for r in records],
                joined=[[segment.name for segment in group] for group in groups])
            try:
                dead = self.chunks.dead_ids()  # type: ignore[attr-defined]
                postings = []
                self._searched: list[Segment] = []
                for parts in groups:
                    held = [p.postings for p in parts if p.postings is not None]
                    if held:
                        postings.append(held[0] if len(held) == 1 else Postings.concat(held))
                    joined = joined_vectors(parts, dead, use_gpu) if len(parts) > 1 else None
                    self._searched.extend([joined] if joined is not None else parts)
            except BaseException:
                self.chunks.close()
                raise
            bm25 = self.manifest.index.get("bm25", {})
            self.lexical: BM25Index | SegmentedBM25 | None = SegmentedBM25(postings, [dead] * len(postings),
                                                                           tokenizer, **bm25)
        else:
            self.chunks = ChunkStore.open_readonly(directory / CHUNKS_FILE)
            vectors = VectorIndex.load(directory / VECTORS_FILE, self.manifest.index["factory"], use_gpu)
            self.segments = [Segment("legacy", directory, vectors, None, np.sort(vectors.contains_ids()))]
            self._searched = self.segments
            dead = self.chunks.masked_ids()
            # Indexes written before BM25 existed have none until their next write.
            self.lexical = BM25Index.load(directory, tokenizer) if (directory / BM25_FILES[0]).is_file() else None
        self.masked = dead
        # Each searched segment's dead vectors: those its own search must skip (none in a joined one).
        self._dead = [segment.holds(dead) for segment in self._searched]
        problems = version_problems(self.manifest, self.segments)
        if problems:
            self.chunks.close()
            raise IndexCorruptError(f"{directory}: {'; '.join(problems)}; run `rag check`, or rebuild the index")

    @property
    def version(self) -> str:
        return self.directory.name

    @property
    def on_gpu(self) -> bool:
        """Whether its vectors are searched on the GPU (every segment's, joined ones included)."""
        held = [s.vectors for s in self._searched if s.vectors is not None]
        return bool(held) and all(v.on_gpu for v in held)

    @property
    def vector_count(self) -> int:
        return sum(s.vectors.ntotal for s in self.segments if s.vectors is not None)

    def search(self, query_vectors: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """(chunk id, score) best first; `allowed` restricts the search to a filter's chunk ids."""
        empty: list[list[tuple[int, float]]] = [[] for _ in range(len(query_vectors))]
        if allowed is not None:
            if not len(allowed):
                return empty
            allowed = np.unique(np.asarray(allowed, dtype=np.int64))
        found = []
        for segment, dead in zip(self._searched, self._dead):
            if segment.vectors is None or segment.vectors.ntotal == len(dead):
                continue
            mine = segment.holds(allowed) if allowed is not None else None
            if mine is not None and not len(mine):
                continue
            found.append(segment.vectors.search(query_vectors, k, self.settings.nprobe, self.settings.hnsw_ef_search,
                                                mine, dead))
        if not found:
            return empty
        if len(found) == 1:
            scores, ids = found[0]
        else:
            scores, ids = np.concatenate([f[0] for f in found], axis=1), np.concatenate([f[1] for f in found], axis=1)
            order = np.lexsort((ids, -scores), axis=1)[:, :k]  # best score first, then the smaller id
            scores, ids = np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
        return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]
                for row_ids, row_scores in zip(ids, scores)]

    def close(self) -> None:
        self.chunks.close()


class IndexWriter:
    """Changes to a new version, committed all at once or not at all. Use as a context manager.

    The changes go to one new segment; rows of older segments it deletes or replaces are
    tombstoned there. A version written before segments is rewritten into that segment whole.
    """

    def __init__(self, store: IndexStore, embedding: dict[str, Any], chunking: dict[str, Any]) -> None:
        self.store = store
        self.embedding = embedding
        self.chunking = chunking
        self.changed = False
        self._lock_fd: int | None = None
        self._staging: Path | None = None  # the new segment's staging folder
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # vectors held until the index is trained
        self._pending_count = 0
        self._base: Manifest | None = None
        self._base_number = 0
        self._segments: list[dict[str, Any]] = []  # the base version's segment records
        self._template: str | None = None
        self._template_files: dict[str, Any] = {}
        self._next_segment = 1
        self._merge_all = False
        self._legacy = False  # the base version was written before segments
        self._older: dict[str, VectorIndex] = {}  # older segments' vectors, loaded to copy some over
        self.tokenizer = make_tokenizer(store.settings)
        self._retokenize = False

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> "IndexWriter":
        self.begin()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and self._staging is not None:
            self.commit()
            return
        self.abort()
        if isinstance(exc, STORAGE_ERRORS):
            raise self._storage_error(exc) from exc

    def _storage_error(self, exc: BaseException) -> RagError:
        return _disk_error(exc, self.store.path, has_previous=self._base_number > 0)

    def _lock(self) -> None:
        path = self.store.path
        problem = _not_a_folder(path)
        if problem is not None:
            raise problem
        created = [p for p in (path, *path.parents) if not p.exists()]
        has_previous = (path / CURRENT_FILE).exists()
        had_lock_file = (path / LOCK_FILE).exists()
        fd: int | None = None
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                raise IndexLockedError(
                    f"index {path} is being written by another process (pid {holder}); "
                    "wait for it to finish, or stop it"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except (OSError, IndexLockedError) as exc:
            if fd is not None:
                os.close(fd)
            if isinstance(exc, IndexLockedError):
                raise
            if not has_previous:  # leave no empty folder or LOCK behind a failed first write
                if not had_lock_file and path.is_dir():
                    (path / LOCK_FILE).unlink(missing_ok=True)
                for folder in created:
                    try:
                        folder.rmdir()
                    except OSError:
                        break
            raise _disk_error(exc, path, has_previous) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_leftovers(self, current: str | None) -> None:
        """Staging folders, uncommitted versions and segments no version names, left by a
        writer that was killed."""
        current_number = int(current[1:]) if current else 0
        for entry in self.store.path.iterdir():
            match = _VERSION.match(entry.name)
            if entry.name.startswith(".staging-") or (match and int(match.group(1)) > current_number):
                log.info("removing %s left by an interrupted write", entry)
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name == CURRENT_FILE + ".tmp":
                entry.unlink(missing_ok=True)
        self._remove_unnamed_segments()

    def _remove_unnamed_segments(self) -> None:
        root = self.store.segments_root
        if not root.is_dir():
            return
        named = self.store.referenced_segments()
        for entry in root.iterdir():
            if entry.name.startswith(".staging-") or (SEGMENT_NAME.match(entry.name) and entry.name not in named):
                log.info("removing segment %s, which no version names", entry.name)
                shutil.rmtree(entry, ignore_errors=True)

    def begin(self) -> None:
        self._lock()
        try:
            self._begin_locked()
        except BaseException:
            self.abort()
            raise

    def _begin_locked(self) -> None:
        store = self.store
        current = store.current_version()
        self._remove_leftovers(current)
        base: Path | None = store.path / current if current else None
        self._base_number = int(current[1:]) if current else 0
        next_id = 1
        if base is not None:
            manifest = self._base = Manifest.read(base)
            check_embedding(store.path, manifest.embedding, self.embedding)
            check_chunking(store.path, manifest.chunking, self.chunking)
            if manifest.index.get("factory") != store.settings.factory:
                raise RagError(
                    f"index {store.path} is a {manifest.index.get('factory')!r} index; index.factory is "
                    f"{store.settings.factory!r}. Use the same type, or build a new index in another folder."
                )
            if manifest.index.get("bm25_tokenizer") != self.tokenizer.settings:
                # New BM25 settings (or an index from before BM25): every chunk is tokenized again.
                log.info("BM25 tokenizer settings changed: re-tokenizing every chunk at commit")
                self._retokenize = self.changed = True
            elif manifest.index.get("bm25") != self._bm25_parameters():
                log.info("BM25 parameters changed: searches use the new ones from the next version")
                self.changed = True
            if is_segmented(manifest):
                extra = manifest.model_extra
                self._segments = list(extra.get("segments", []))
                wrong = [f"FAISS holds {r['dimension']}-dimensional vectors (segment {r['name']})"
                         for r in self._segments if r.get("dimension") not in (None, manifest.embedding.get("dimension"))]
                if wrong:
                    raise IndexCorruptError(
                        f"{base}: the manifest says embedding dimension {manifest.embedding.get('dimension')}, "
                        f"{'; '.join(wrong)}; nothing was written. Run `rag check`, and rebuild the index if it "
                        "confirms the problem")
                self._template = extra.get("template")
                self._template_files = extra.get("template_files", {})
                self._next_segment = int(extra.get("next_segment", 1))
                next_id = int(extra.get("next_chunk_id", 1))
        name = segment_name(self._next_segment)
        root = store.segments_root
        self._staging = root / f".staging-{name}-{os.getpid()}"
        legacy = self._legacy = base is not None and not is_segmented(self._base)  # type: ignore[arg-type]
        try:
            root.mkdir(exist_ok=True)
            self._staging.mkdir()
            if legacy:
                log.info("rewriting %s (written before segments) as one segment", current)
                ChunkStore.open_staging(self._staging / CHUNKS_FILE, base / CHUNKS_FILE).close()  # type: ignore[operator]
                self.changed = True
            self.chunks = SegmentedChunks.open([(r["name"], root / r["name"] / CHUNKS_FILE) for r in self._segments],
                                               new=(name, self._staging / CHUNKS_FILE))
            if not legacy:
                self.chunks.continue_ids(next_id)
        except STORAGE_ERRORS as exc:
            raise self._storage_error(exc) from None
        if legacy:
            self.vectors = VectorIndex.load(base / VECTORS_FILE, store.settings.factory, store.use_gpu())  # type: ignore[operator]
            problems = manifest_problems(self._base, self.vectors)  # type: ignore[arg-type]
            if problems:
                raise IndexCorruptError(f"{base}: {'; '.join(problems)}; nothing was written. Run `rag check`, "
                                        "and rebuild the index if it confirms the problem")
        else:
            self.vectors = self._empty_vectors()
        log.info("stage: writing into %s", self._staging.name)

    def _empty_vectors(self) -> VectorIndex:
        """A new segment's vector index: trained already where the index type needs training and
        an earlier write trained it."""
        settings = self.store.settings
        if self.trained_template is not None:
            return VectorIndex.load(self.trained_template, settings.factory, self.store.use_gpu())
        return VectorIndex.create(settings.factory, int(self.embedding["dimension"]), self.store.use_gpu())

    def abort(self) -> None:
        if getattr(self, "chunks", None) is not None:
            self.chunks.close()
            self.chunks = None  # type: ignore[assignment]
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        self._unlock()

    # -- changes -------------------------------------------------------------------------

    def document(self, collection: str, doc_id: str) -> StoredDocument | None:
        return self.chunks.document(collection, doc_id)

    def collections_of(self, doc_id: str) -> list[str]:
        return self.chunks.collections_of(doc_id)

    def document_with_content(self, collection: str, sha256: str) -> str | None:
        return self.chunks.document_with_content(collection, sha256)

    def documents_in(self, collection: str) -> Iterator[StoredDocument]:
        return self.chunks.documents_in(collection)

    def matching_documents(self, filters: list[Filter]) -> list[tuple[str, str]]:
        return self.chunks.matching_documents(filters)

    def delete_document(self, collection: str, doc_id: str) -> bool:
        """Remove a document; False when it is not in the index."""
        if self.chunks.document(collection, doc_id) is None:
            return False
        ids = self.chunks.delete_document(collection, doc_id)
        if ids:
            self._remove_vectors(ids)
        self._copy_moved_vectors()
        self.changed = True
        return True

    def _copy_moved_vectors(self) -> None:
        """Chunks an older segment held for a deleted document pass, under new ids, to the
        document that shared its content: their vectors come along."""
        moved, self.chunks.moved_chunks = self.chunks.moved_chunks, []
        if not moved:
            return
        old = np.array([o for o, _ in moved], dtype=np.int64)
        new = np.array([n for _, n in moved], dtype=np.int64)
        order = np.argsort(old)
        old, new = old[order], new[order]
        for record in self._segments:
            if not record.get("vectors"):
                continue
            name = record["name"]
            if name not in self._older:
                self._older[name] = VectorIndex.load(self.store.segments_root / name / VECTORS_FILE,
                                                     self.store.settings.factory, use_gpu=False)
            held = np.isin(old, self._older[name].contains_ids())
            if held.any():
                self._add_vectors(self._older[name].reconstruct(old[held]), new[held])

    def put_alias(self, document: Document, collection: str, holder: str) -> None:
        """Index a document whose content `holder` already holds: no chunks, no vectors."""
        self.delete_document(collection, document.doc_id)
        self.chunks.put_document(document, collection, content_of=holder)
        self.changed = True

    def relocate(self, collection: str, document: Document) -> None:
        """Unchanged content read from a new place: only its source and origin change."""
        self.chunks.relocate(collection, document)
        self.changed = True

    def compact(self) -> int:
        """Merge every segment into one, without deleted rows and vectors; returns how many
        vectors that drops."""
        dead = self.chunks.dead_vector_count()
        if not dead and len(self._segments) <= 1 and not self._legacy:
            return 0
        self._merge_all = self.changed = True
        return dead

    def _remove_vectors(self, ids: list[int]) -> None:
        drop = set(ids)
        if self._pending:
            # Vectors still waiting for the index to be trained were never added to FAISS.
            kept, unadded = [], set()
            for vecs, vec_ids in self._pending:
                mask = np.array([int(i) not in drop for i in vec_ids], dtype=bool)
                unadded.update(int(i) for i in vec_ids[~mask])
                kept.append((vecs[mask], vec_ids[mask]))
            self._pending = kept
            self._pending_count = sum(len(i) for _, i in kept)
            ids = [i for i in ids if int(i) not in unadded]
        if self.vectors.removes_in_place:
            self.vectors.remove(ids)
        else:
            self.chunks.mask(ids)

    def put_document(self, document: Document, collection: str, chunks: list[Chunk], vectors: np.ndarray | None,
                     tokens: list[str] | None = None, codes: np.ndarray | None = None) -> None:
        """Insert or replace a document with its chunks and their vectors; `tokens`, each
        chunk's BM25 tokens where another process made them (`bm25_tokens`), else made here;
        `codes` instead of `vectors`, where another process encoded them for `trained_template`."""
        given = codes if codes is not None else vectors
        if given is None or len(chunks) != len(given) or (tokens is not None and len(tokens) != len(chunks)):
            raise ValueError("one vector or code (and one token list) per chunk")
        if codes is not None and (self._template is None or codes.shape[1] != self.vectors.code_size):
            raise RagError(f"document {document.doc_id!r} came encoded for another index than {self.store.path} "
                           "(its IVF training changed during the run?); nothing was written: run again")
        self.delete_document(collection, document.doc_id)
        self.chunks.put_document(document, collection)
        if tokens is None:
            tokens = [self._bm25_tokens(c.embed_text) for c in chunks]
        ids = np.asarray(self.chunks.add_chunks(chunks, tokens, collection), dtype=np.int64)
        if codes is not None:
            self.vectors.add_codes(codes, ids)
            self._move_large_lists_to_disk()
        else:
            self._add_vectors(vectors, ids)  # type: ignore[arg-type]
        self.changed = True

    @property
    def trained_template(self) -> Path | None:
        """The trained, empty IVF index every segment of this index starts from, once an earlier
        write trained one: what workers encode vectors for (VectorIndex.encode)."""
        if self._template is None:
            return None
        return self.store.segments_root / self._template / TEMPLATE_FILE

    def _add_vectors(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if self.vectors.is_trained:
            self.vectors.add(vectors, ids)
            self._move_large_lists_to_disk()
            return
        self._pending.append((vectors, ids))
        self._pending_count += len(ids)
        if self._pending_count >= self.store.settings.train_sample:
            self._train_and_flush()

    def _move_large_lists_to_disk(self) -> None:
        """Once the new segment's IVF lists pass index.ondisk_bytes they move into its folder
        (ON_DISK_FILE), so a write larger than memory grows a file instead."""
        limit = self.store.settings.ondisk_bytes
        vectors = self.vectors
        if limit and not self._legacy and self._staging is not None and vectors.list_bytes > limit \
                and not vectors.on_disk:
            log.info("stage: the new segment's IVF lists pass index.ondisk_bytes; moving them to disk")
            vectors.move_lists_to_disk(self._staging / ON_DISK_FILE)

    def _train_and_flush(self) -> None:
        if not self._pending:
            return
        vectors = np.concatenate([v for v, _ in self._pending])
        ids = np.concatenate([i for _, i in self._pending])
        log.info("stage: training %s on %d vectors", self.store.settings.factory, len(vectors))
        self.vectors.train(vectors[: self.store.settings.train_sample])
        self.vectors.add(vectors, ids)
        self._pending, self._pending_count = [], 0
        self._move_large_lists_to_disk()

    # -- commit --------------------------------------------------------------------------

    def commit(self) -> str | None:
        """Make the changes the live version; returns its name, or None when nothing changed."""
        if self._staging is None:
            raise RagError("commit() without begin()")
        if not self.changed:
            self.abort()
            return None
        store = self.store
        root = store.segments_root
        try:
            if not self.vectors.is_trained:
                self._train_and_flush()
            if self._template is None and self._needs_training():
                self._template = self._save_template()
            log.info("stage: building the BM25 postings")
            self.chunks.fill_tokens(self._bm25_tokens, self._retokenize)
            ids, tokens = self.chunks.new_rows()
            postings = Postings.build(ids, (deserialize_tokens(t) for t in tokens), self.tokenizer.settings)
            next_id = self.chunks.next_id()
            written = self.chunks.written()
            self.chunks.commit()
            self.chunks.close()
            self.chunks = None  # type: ignore[assignment]
            log.info("stage: writing FAISS index (%d vectors)", self.vectors.ntotal)
            name = segment_name(self._next_segment)
            records = [*self._segments, finish_segment(self._staging, root / name, self.vectors, postings, name)]
            self._staging = None
            next_segment = self._next_segment + 1
            records, next_segment = self._merge(records, next_segment)
            version = self._base_number + 1
            manifest = self._manifest(version, records, written, next_id, next_segment)
            log.info("stage: syncing files to disk")
            staging = store.path / f".staging-{_version_name(version)}-{os.getpid()}"
            staging.mkdir()
            fsync_path(manifest.write(staging))
            fsync_path(staging)
            final = store.path / _version_name(version)
            os.replace(staging, final)
            fsync_path(store.path)
            name = _version_name(version)
            log.info("stage: swapping CURRENT to %s", name)
            tmp = store.path / (CURRENT_FILE + ".tmp")
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write(name + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, store.path / CURRENT_FILE)
            fsync_path(store.path)
            log.info("stage: committed %s", name)
            self._retire_old_versions(name)
            self._remove_unnamed_segments()
            return name
        except STORAGE_ERRORS as exc:
            raise self._storage_error(exc) from exc
        finally:
            self.abort()

    def _needs_training(self) -> bool:
        return VectorIndex.create(self.store.settings.factory, int(self.embedding["dimension"]),
                                  use_gpu=False).is_trained is False and self.vectors.is_trained

    def _save_template(self) -> str:
        """The trained, empty index later segments start from, in a folder of its own; its
        checksum goes into every manifest, for `rag check`."""
        name = segment_name(self._next_segment, "t")
        staging = self.store.segments_root / f".staging-{name}-{os.getpid()}"
        staging.mkdir()
        self.vectors.empty_copy().save(staging / TEMPLATE_FILE)
        self._template_files = {TEMPLATE_FILE: file_digest(staging / TEMPLATE_FILE)}
        fsync_path(staging / TEMPLATE_FILE)
        fsync_path(staging)
        os.replace(staging, self.store.segments_root / name)
        return name

    def _merge(self, records: list[dict[str, Any]], next_segment: int) -> tuple[list[dict[str, Any]], int]:
        """Merge segments as the policy says (or all of them, for `rag compact` and new BM25
        tokenizer settings); returns the version's segments and the next segment number."""
        settings = self.store.settings
        if self._merge_all or self._retokenize:
            runs = [(0, len(records))]
        else:
            runs = plan_merges([r["chunks"] + r.get("masked", 0) for r in records], settings.max_segments)
        if not runs:
            return records, next_segment
        retokenize = self._bm25_tokens if self._retokenize else None
        out: list[dict[str, Any]] = []
        at = 0
        for start, end in runs:
            out.extend(records[at:start])
            name = segment_name(next_segment)
            next_segment += 1
            log.info("stage: merging %d segments into %s", end - start, name)
            out.append(merge_segments(self.store.segments_root, records, records[start:end], name, settings.factory,
                                      self.trained_template, retokenize, settings.train_sample, self.tokenizer.settings,
                                      settings.ondisk_bytes))
            at = end
        out.extend(records[at:])
        return out, next_segment

    def _manifest(self, version: int, records: list[dict[str, Any]], written: dict[str, int], next_id: int,
                  next_segment: int) -> Manifest:
        """The new version's manifest. Its counts are the base version's plus what the new segment
        added less what it tombstoned: counting a million rows through the segments' views took
        most of a one-document write's time."""
        base = self._base.counts if self._base is not None and is_segmented(self._base) else {}
        counts = {"documents": base.get("documents", 0) + written["added.documents"] - written["deleted.documents"],
                  "chunks": base.get("chunks", 0) + written["added.chunks"] - written["deleted.chunks"]}
        counts["vectors"] = sum(r["vectors"] for r in records)
        counts["masked"] = counts["vectors"] - counts["chunks"]
        # Dead vectors only ever grow by what this write hid (merges drop some): more is a miscount.
        most = base.get("masked", 0) + written["deleted.chunks"] + written["masked"]
        if not 0 <= counts["masked"] <= most or min(counts["documents"], counts["chunks"]) < 0:
            raise IndexCorruptError(f"internal error: {counts['chunks']} chunks, {counts['vectors']} vectors and "
                                    f"{counts['documents']} documents do not add up; nothing was committed")
        now = utc_now()
        return Manifest(
            format_version=FORMAT_VERSION,
            version=version,
            created_at=self._base.created_at if self._base else now,
            updated_at=now,
            embedding=self.embedding,
            chunking=self.chunking,
            index={"factory": self.store.settings.factory, "metric": "inner_product",
                   "faiss_version": _faiss_version(), "bm25_tokenizer": self.tokenizer.settings,
                   "bm25": self._bm25_parameters()},
            counts=counts,
            files={},
            segments=records,
            template=self._template,
            template_files=self._template_files,
            next_chunk_id=next_id,
            next_segment=next_segment,
        )

    def _bm25_tokens(self, text: str) -> str:
        return bm25_tokens(self.tokenizer, text)

    def _bm25_parameters(self) -> dict[str, Any]:
        return BM25Index(self.tokenizer, k1=self.store.settings.bm25_k1, b=self.store.settings.bm25_b).settings

    def _retire_old_versions(self, current: str) -> None:
        keep = self.store.settings.keep_versions
        older = [v for v in self.store.versions() if int(v[1:]) < int(current[1:])]
        for name in older[: max(0, len(older) - keep)]:
            shutil.rmtree(self.store.path / name, ignore_errors=True)


def _faiss_version() -> str:
    import faiss

    return str(getattr(faiss, "__version__", "unknown"))
