"""The index folder: immutable versions, a CURRENT pointer swapped atomically, one writer.

    <index>/CURRENT          names the live version, e.g. "v000007"
    <index>/LOCK             flock()ed by the one writer; holds its process id
    <index>/v000007/         manifest.json, chunks.sqlite, vectors.faiss (never modified)
    <index>/.staging-*/      a version being written; deleted if its writer died

A writer copies the live version into a staging folder, applies its changes there, fsyncs
every file, renames the folder to its version name and only then replaces CURRENT (write a
temporary file, fsync, rename, fsync the folder). A process killed at any moment leaves
CURRENT naming a complete version, so readers never see a half-written index.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rag.config import IndexSettings
from rag.filters import Filter
from rag.errors import IndexCorruptError, IndexLockedError, IndexNotFoundError, RagError
from rag.index.chunkstore import CHUNKS_FILE, ChunkStore, StoredDocument
from rag.index.manifest import FORMAT_VERSION, Manifest, check_chunking, check_embedding, utc_now
from rag.lexical import BM25Index, Tokenizer, deserialize_tokens, serialize_tokens
from rag.lexical.bm25 import FILES as BM25_FILES
from rag.index.vectors import VECTORS_FILE, VectorIndex, gpu_count
from rag.records import Chunk, Document

log = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
LOCK_FILE = "LOCK"
_VERSION = re.compile(r"^v(\d{6,})$")


def _version_name(number: int) -> str:
    return f"v{number:06d}"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


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


def manifest_problems(manifest: Manifest, vectors: VectorIndex) -> list[str]:
    """Where the manifest and the FAISS index of one version disagree (empty when they agree)."""
    problems = []
    dimension = manifest.embedding.get("dimension")
    if dimension != vectors.dimension:
        problems.append(f"the manifest says embedding dimension {dimension}, FAISS holds {vectors.dimension}-"
                        "dimensional vectors")
    count = manifest.counts.get("vectors")
    if count is not None and count != vectors.ntotal:
        problems.append(f"the manifest says {count} vectors, FAISS holds {vectors.ntotal}")
    metric = manifest.index.get("metric", "inner_product")
    if metric != vectors.metric:
        problems.append(f"the manifest says metric {metric}, FAISS uses {vectors.metric}")
    return problems


def make_tokenizer(settings: IndexSettings) -> Tokenizer:
    return Tokenizer(stem=settings.bm25_stem, stopwords=None if settings.bm25_stopwords == "none" else "en",
                     chinese=settings.bm25_chinese)


class IndexStore:
    """One index folder."""

    def __init__(self, path: Path, settings: IndexSettings) -> None:
        self.path = Path(path)
        self.settings = settings

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
                return IndexReader(self.path / name, self.settings, self.use_gpu())
            except IndexCorruptError:
                # A writer may have retired this version between our read of CURRENT and the open.
                if self.current_version() == name:
                    raise
        raise IndexCorruptError(f"{self.path}: CURRENT keeps changing while opening; try again")

    def open_writer(self, embedding: dict[str, Any], chunking: dict[str, Any]) -> "IndexWriter":
        return IndexWriter(self, embedding, chunking)

    def disk_bytes(self) -> int:
        name = self.current_version()
        if name is None:
            return 0
        return sum(p.stat().st_size for p in (self.path / name).iterdir() if p.is_file())


class IndexReader:
    """A snapshot of one committed version; stays valid while writers commit newer ones."""

    def __init__(self, directory: Path, settings: IndexSettings, use_gpu: bool) -> None:
        self.directory = directory
        self.settings = settings
        self.manifest = Manifest.read(directory)
        self.chunks = ChunkStore.open_readonly(directory / CHUNKS_FILE)
        self.vectors = VectorIndex.load(directory / VECTORS_FILE, self.manifest.index["factory"], use_gpu)
        self.masked = self.chunks.masked_ids()
        # Indexes written before BM25 existed have none until their next write.
        self.lexical = BM25Index.load(directory, make_tokenizer(settings)) \
            if (directory / BM25_FILES[0]).is_file() else None
        problems = manifest_problems(self.manifest, self.vectors)
        if problems:
            self.chunks.close()
            raise IndexCorruptError(f"{directory}: {'; '.join(problems)}; run `rag check`, or rebuild the index")

    @property
    def version(self) -> str:
        return self.directory.name

    def search(self, query_vectors: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """(chunk id, score) best first; `allowed` restricts the search to a filter's chunk ids."""
        if self.vectors.ntotal == 0 or (allowed is not None and not len(allowed)):
            return [[] for _ in range(len(query_vectors))]
        scores, ids = self.vectors.search(query_vectors, k, self.settings.nprobe, self.settings.hnsw_ef_search,
                                          allowed, self.masked)
        return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]
                for row_ids, row_scores in zip(ids, scores)]

    def close(self) -> None:
        self.chunks.close()


class IndexWriter:
    """Changes to a new version, committed all at once or not at all. Use as a context manager."""

    def __init__(self, store: IndexStore, embedding: dict[str, Any], chunking: dict[str, Any]) -> None:
        self.store = store
        self.embedding = embedding
        self.chunking = chunking
        self.changed = False
        self._lock_fd: int | None = None
        self._staging: Path | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # vectors held until the index is trained
        self._pending_count = 0
        self._base_created_at: str | None = None
        self._base_number = 0
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
        """Staging folders and uncommitted versions left by a writer that was killed."""
        current_number = int(current[1:]) if current else 0
        for entry in self.store.path.iterdir():
            match = _VERSION.match(entry.name)
            if entry.name.startswith(".staging-") or (match and int(match.group(1)) > current_number):
                log.info("removing %s left by an interrupted write", entry)
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name == CURRENT_FILE + ".tmp":
                entry.unlink(missing_ok=True)

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
        if base is not None:
            manifest = Manifest.read(base)
            check_embedding(store.path, manifest.embedding, self.embedding)
            check_chunking(store.path, manifest.chunking, self.chunking)
            if manifest.index.get("factory") != store.settings.factory:
                raise RagError(
                    f"index {store.path} is a {manifest.index.get('factory')!r} index; index.factory is "
                    f"{store.settings.factory!r}. Use the same type, or build a new index in another folder."
                )
            self._base_created_at = manifest.created_at
            if manifest.index.get("bm25_tokenizer") != self.tokenizer.settings:
                # New BM25 settings (or an index from before BM25): every chunk is tokenized again.
                log.info("BM25 tokenizer settings changed: re-tokenizing every chunk at commit")
                self._retokenize = self.changed = True
            elif manifest.index.get("bm25") != self._bm25_parameters():
                log.info("BM25 parameters changed: rebuilding BM25 at commit")
                self.changed = True
        self._staging = store.path / f".staging-{_version_name(self._base_number + 1)}-{os.getpid()}"
        try:
            self._staging.mkdir()
            self.chunks = ChunkStore.open_staging(self._staging / CHUNKS_FILE, base / CHUNKS_FILE if base else None)
        except STORAGE_ERRORS as exc:
            raise self._storage_error(exc) from None
        if base is not None:
            self.vectors = VectorIndex.load(base / VECTORS_FILE, store.settings.factory, store.use_gpu())
            problems = manifest_problems(manifest, self.vectors)
            if problems:
                raise IndexCorruptError(f"{base}: {'; '.join(problems)}; nothing was written. Run `rag check`, "
                                        "and rebuild the index if it confirms the problem")
        else:
            self.vectors = VectorIndex.create(store.settings.factory, int(self.embedding["dimension"]), store.use_gpu())
        log.info("stage: writing into %s", self._staging.name)

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
        self.changed = True
        return True

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
        """Rebuild the vector index without its masked ids; returns how many were dropped."""
        masked = self.chunks.masked_ids()
        if not len(masked):
            return 0
        self._train_and_flush()
        log.info("stage: rebuilding %s without %d masked vectors", self.store.settings.factory, len(masked))
        removed = self.vectors.rebuild_without(masked)
        self.chunks.clear_masked()
        self.changed = True
        return removed

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

    def put_document(self, document: Document, collection: str, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Insert or replace a document with its chunks and their vectors."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        self.delete_document(collection, document.doc_id)
        self.chunks.put_document(document, collection)
        tokens = [serialize_tokens(self.tokenizer.tokenize(c.embed_text)) for c in chunks]
        ids = np.asarray(self.chunks.add_chunks(chunks, tokens, collection), dtype=np.int64)
        self._add_vectors(vectors, ids)
        self.changed = True

    def _add_vectors(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if self.vectors.is_trained:
            self.vectors.add(vectors, ids)
            return
        self._pending.append((vectors, ids))
        self._pending_count += len(ids)
        if self._pending_count >= self.store.settings.train_sample:
            self._train_and_flush()

    def _train_and_flush(self) -> None:
        if not self._pending:
            return
        vectors = np.concatenate([v for v, _ in self._pending])
        ids = np.concatenate([i for _, i in self._pending])
        log.info("stage: training %s on %d vectors", self.store.settings.factory, len(vectors))
        self.vectors.train(vectors[: self.store.settings.train_sample])
        self.vectors.add(vectors, ids)
        self._pending, self._pending_count = [], 0

    # -- commit --------------------------------------------------------------------------

    def commit(self) -> str | None:
        """Make the changes the live version; returns its name, or None when nothing changed."""
        if self._staging is None:
            raise RagError("commit() without begin()")
        if not self.changed:
            self.abort()
            return None
        store = self.store
        try:
            if not self.vectors.is_trained:
                self._train_and_flush()
            log.info("stage: building the BM25 index")
            self._build_lexical()
            counts = self.chunks.counts()
            self.chunks.commit()
            self.chunks.close()
            self.chunks = None  # type: ignore[assignment]
            counts["vectors"] = self.vectors.ntotal
            if counts["vectors"] != counts["chunks"] + counts["masked"]:
                raise IndexCorruptError(
                    f"internal error: {counts['chunks']} chunks and {counts['masked']} masked vectors but "
                    f"{counts['vectors']} vectors; nothing was committed"
                )
            log.info("stage: writing FAISS index (%d vectors)", counts["vectors"])
            self.vectors.save(self._staging / VECTORS_FILE)
            now = utc_now()
            name = _version_name(self._base_number + 1)
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                version=self._base_number + 1,
                created_at=self._base_created_at or now,
                updated_at=now,
                embedding=self.embedding,
                chunking=self.chunking,
                index={"factory": store.settings.factory, "metric": "inner_product",
                       "faiss_version": _faiss_version(), "bm25_tokenizer": self.tokenizer.settings,
                       "bm25": self._bm25_parameters()},
                counts=counts,
                files={f: file_digest(self._staging / f) for f in (CHUNKS_FILE, VECTORS_FILE, *BM25_FILES)},
            )
            problems = manifest_problems(manifest, self.vectors)
            if problems:
                raise IndexCorruptError(f"internal error: {'; '.join(problems)}; nothing was committed")
            manifest.write(self._staging)
            log.info("stage: syncing files to disk")
            for entry in self._staging.iterdir():
                _fsync_path(entry)
            _fsync_path(self._staging)
            final = store.path / name
            os.replace(self._staging, final)
            self._staging = None
            _fsync_path(store.path)
            log.info("stage: swapping CURRENT to %s", name)
            tmp = store.path / (CURRENT_FILE + ".tmp")
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write(name + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, store.path / CURRENT_FILE)
            _fsync_path(store.path)
            log.info("stage: committed %s", name)
            self._retire_old_versions(name)
            return name
        except STORAGE_ERRORS as exc:
            raise self._storage_error(exc) from exc
        finally:
            self.abort()

    def _new_lexical(self) -> BM25Index:
        return BM25Index(self.tokenizer, k1=self.store.settings.bm25_k1, b=self.store.settings.bm25_b)

    def _bm25_parameters(self) -> dict[str, Any]:
        return self._new_lexical().settings

    def _build_lexical(self) -> None:
        """BM25 over every chunk, from the tokens stored with it. Chunks written before BM25
        existed (or under other tokenizer settings) are tokenized first; the build then streams
        the stored tokens, so memory holds term ids, not every chunk's token strings."""
        self.chunks.fill_tokens(lambda text: serialize_tokens(self.tokenizer.tokenize(text)), self._retokenize)
        ids = np.fromiter(self.chunks.chunk_ids(), dtype=np.int64)
        lexical = self._new_lexical()
        lexical.build(ids, (deserialize_tokens(tokens) for tokens in self.chunks.stored_tokens()))
        lexical.save(self._staging)

    def _retire_old_versions(self, current: str) -> None:
        keep = self.store.settings.keep_versions
        older = [v for v in self.store.versions() if int(v[1:]) < int(current[1:])]
        for name in older[: max(0, len(older) - keep)]:
            shutil.rmtree(self.store.path / name, ignore_errors=True)


def _faiss_version() -> str:
    import faiss

    return str(getattr(faiss, "__version__", "unknown"))
