"""The one writer: changes to a new version, committed all at once or not at all.

A write costs what it changes, as in Lucene or Tantivy: its new documents go to one new small
segment, and what it deletes or replaces in older segments is recorded there as tombstones. When
a version would have more than `index.max_segments`, the commit merges the smallest neighbours;
`rag compact` merges everything into one. A version written before segments is rewritten into
the new segment whole (rag.index.legacy).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorruptError, RagError
from rag.filters import Filter
from rag.index import commit as committing
from rag.index import legacy
from rag.index.chunkstore import ChunkStore
from rag.index.edits import SegmentEdits
from rag.index.folder import IndexFolder, disk_error
from rag.index.lock import WriteLock, remove_leftovers, remove_unnamed_segments
from rag.index.manifest import Manifest, SegmentRecord, check_chunking, check_embedding
from rag.index.rows import StoredDocument
from rag.index.schema import CHUNKS_FILE
from rag.index.segments import TEMPLATE_FILE, Reembed, finish_segment, segment_name
from rag.index.tokens import bm25_tokens, make_tokenizer
from rag.index.training import NewVectors
from rag.index.vectors import VECTORS_FILE, VectorIndex
from rag.index.views import open_segments
from rag.lexical import BM25Index, deserialize_tokens
from rag.lexical import Postings
from rag.records import Chunk, Document

log = logging.getLogger(__name__)

# What FAISS (RuntimeError), SQLite and the OS raise when storage gives out.
STORAGE_ERRORS = (OSError, sqlite3.Error, RuntimeError)
# Logged when the commit starts (benchmarks/crash_bench.py times kills inside the commit from it).
COMMIT_STARTS = "stage: building the BM25 postings"


class IndexWriter:
    """Use as a context manager: committed when the block ends normally, nothing otherwise."""

    def __init__(self, folder: IndexFolder, embedding: dict[str, Any], chunking: dict[str, Any],
                 reembed: Reembed | None = None) -> None:
        self.folder = folder
        # A re-embed: every row kept, every vector made again by another model (`embedding`'s).
        self.reembed = reembed
        self.embedding = embedding
        self.chunking = chunking
        self.changed = False
        self.lock = WriteLock(folder.path)
        self.tokenizer = make_tokenizer(folder.settings)
        self._staging: Path | None = None  # the new segment's staging folder
        self._base: Manifest | None = None
        self._base_number = 0
        self._segments: list[SegmentRecord] = []  # the base version's segments
        self._template: str | None = None
        self._template_files: dict[str, Any] = {}
        self._next_segment = 1
        self._merge_all = False
        self._legacy = False  # the base version was written before segments
        self._retokenize = False
        self._older: dict[str, VectorIndex] = {}  # older segments' vectors, loaded to copy some over
        self.chunks: ChunkStore | None = None
        self.edits: SegmentEdits

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
        return disk_error(exc, self.folder.path, has_previous=self._base_number > 0)

    def begin(self) -> None:
        self.lock.acquire()
        try:
            current = self.folder.current_version()
            remove_leftovers(self.folder, current)
            next_id = self._read_base(current)
            self._open_segment(current, next_id)
        except BaseException:
            self.abort()
            raise

    def _read_base(self, current: str | None) -> int:
        """Take over the live version's state, refusing settings it was not built with; returns
        the next chunk id."""
        if current is None:
            return 1
        folder = self.folder
        self._base_number = int(current[1:])
        manifest = self._base = Manifest.read(folder.path / current)
        if self.reembed is None:
            check_embedding(folder.path, manifest.embedding, self.embedding)
            check_chunking(folder.path, manifest.chunking, self.chunking)
        else:
            self._merge_all = self.changed = True
        if manifest.index.get("factory") != folder.settings.factory:
            raise RagError(f"index {folder.path} is a {manifest.index.get('factory')!r} index; index.factory is "
                           f"{folder.settings.factory!r}. Use the same type, or build a new index in another folder.")
        if manifest.index.get("bm25_tokenizer") != self.tokenizer.settings:
            # New BM25 settings (or an index from before BM25): every chunk is tokenized again.
            log.info("BM25 tokenizer settings changed: re-tokenizing every chunk at commit")
            self._retokenize = self.changed = True
        elif manifest.index.get("bm25") != self._bm25_parameters():
            log.info("BM25 parameters changed: searches use the new ones from the next version")
            self.changed = True
        if not manifest.segmented:
            return 1
        self._segments = list(manifest.segments)
        wrong = [f"FAISS holds {r.dimension}-dimensional vectors (segment {r.name})" for r in self._segments
                 if r.dimension not in (None, manifest.embedding.get("dimension"))]
        if wrong:
            raise IndexCorruptError(
                f"{folder.path / current}: the manifest says embedding dimension "
                f"{manifest.embedding.get('dimension')}, {'; '.join(wrong)}; nothing was written. Run `rag check`, "
                "and rebuild the index if it confirms the problem")
        if self.reembed is None:  # a re-embed's index is trained again, on the new vectors
            self._template, self._template_files = manifest.template, dict(manifest.template_files)
        self._next_segment = manifest.next_segment
        return manifest.next_chunk_id

    def _open_segment(self, current: str | None, next_id: int) -> None:
        """The new segment's staging folder, its rows over the version's, and its vectors."""
        folder = self.folder
        name = segment_name(self._next_segment)
        root = folder.segments_root
        self._staging = root / f".staging-{name}-{os.getpid()}"
        base = folder.path / current if current else None
        self._legacy = self._base is not None and not self._base.segmented
        try:
            root.mkdir(exist_ok=True)
            self._staging.mkdir()
            if self._legacy:
                log.info("rewriting %s (written before segments) as one segment", current)
                legacy.copy_rows(base / CHUNKS_FILE, self._staging / CHUNKS_FILE)  # type: ignore[operator]
                self.changed = True
            self.chunks = open_segments([(r.name, root / r.name / CHUNKS_FILE) for r in self._segments],
                                        new=(name, self._staging / CHUNKS_FILE))
            self.edits = SegmentEdits(self.chunks)
            if not self._legacy:
                self.edits.continue_ids(next_id)
        except STORAGE_ERRORS as exc:
            raise self._storage_error(exc) from None
        if self._legacy:
            index = legacy.load_vectors(base, self._base, folder.settings.factory, folder.use_gpu())  # type: ignore[arg-type]
        else:
            index = self._empty_vectors()
        self.vectors = NewVectors(index, folder.settings, None if self._legacy else self._staging)
        log.info("stage: writing into %s", self._staging.name)

    def _empty_vectors(self) -> VectorIndex:
        """A new segment's vector index: trained already where the index type needs training and
        an earlier write trained it."""
        settings = self.folder.settings
        if self.trained_template is not None:
            return VectorIndex.load(self.trained_template, settings.factory, self.folder.use_gpu())
        return VectorIndex.create(settings.factory, int(self.embedding["dimension"]), self.folder.use_gpu())

    def abort(self) -> None:
        if self.chunks is not None:
            self.chunks.close()
            self.chunks = None
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        self.lock.release()

    # -- changes -------------------------------------------------------------------------

    def document(self, collection: str, doc_id: str) -> StoredDocument | None:
        return self.edits.store.rows.document(collection, doc_id)

    def collections_of(self, doc_id: str) -> list[str]:
        return self.edits.store.rows.collections_of(doc_id)

    def document_with_content(self, collection: str, sha256: str) -> str | None:
        return self.edits.store.rows.document_with_content(collection, sha256)

    def documents_in(self, collection: str) -> Iterator[StoredDocument]:
        return self.edits.store.rows.documents_in(collection)

    def matching_documents(self, filters: list[Filter]) -> list[tuple[str, str]]:
        return self.edits.store.catalog.matching_documents(filters)

    def delete_document(self, collection: str, doc_id: str) -> bool:
        """Remove a document; False when it is not in the index."""
        if self.document(collection, doc_id) is None:
            return False
        ids = self.edits.delete_document(collection, doc_id)
        if ids:
            self.vectors.remove(ids, self.edits.store.rows.mask)
        self._copy_moved_vectors()
        self.changed = True
        return True

    def _copy_moved_vectors(self) -> None:
        """Chunks an older segment held for a deleted document pass, under new ids, to the
        document that shared its content: their vectors come along."""
        moved, self.edits.moved_chunks = self.edits.moved_chunks, []
        if not moved:
            return
        old = np.array([o for o, _ in moved], dtype=np.int64)
        new = np.array([n for _, n in moved], dtype=np.int64)
        order = np.argsort(old)
        old, new = old[order], new[order]
        for record in self._segments:
            if not record.vectors:
                continue
            if record.name not in self._older:
                self._older[record.name] = VectorIndex.load(self.folder.segments_root / record.name / VECTORS_FILE,
                                                            self.folder.settings.factory, use_gpu=False)
            held = np.isin(old, self._older[record.name].contains_ids())
            if held.any():
                self.vectors.add(self._older[record.name].reconstruct(old[held]), new[held])

    def put_alias(self, document: Document, collection: str, holder: str) -> None:
        """Index a document whose content `holder` already holds: no chunks, no vectors."""
        self.delete_document(collection, document.doc_id)
        self.edits.store.rows.put_document(document, collection, content_of=holder)
        self.changed = True

    def relocate(self, collection: str, document: Document) -> None:
        """Unchanged content read from a new place: only its source and origin change."""
        self.edits.relocate(collection, document)
        self.changed = True

    def set_access(self, collection: str, document: Document) -> None:
        """Unchanged content whose access list changed: only its row is rewritten, with the new
        list (and place), in this write's version; its chunks and vectors stay."""
        self.edits.set_access(collection, document)
        self.changed = True

    def compact(self) -> int:
        """Merge every segment into one, without deleted rows and vectors; returns how many
        vectors that drops."""
        dead = self.edits.store.views.dead_vector_count()  # type: ignore[union-attr]
        if not dead and len(self._segments) <= 1 and not self._legacy:
            return 0
        self._merge_all = self.changed = True
        return dead

    def put_document(self, document: Document, collection: str, chunks: list[Chunk], vectors: np.ndarray | None,
                     tokens: list[str] | None = None, codes: np.ndarray | None = None) -> None:
        """Insert or replace a document with its chunks and their vectors; `tokens`, each
        chunk's BM25 tokens where another process made them (`bm25_tokens`), else made here;
        `codes` instead of `vectors`, where another process encoded them for `trained_template`."""
        given = codes if codes is not None else vectors
        if given is None or len(chunks) != len(given) or (tokens is not None and len(tokens) != len(chunks)):
            raise ValueError("one vector or code (and one token list) per chunk")
        if codes is not None and (self._template is None or codes.shape[1] != self.vectors.index.code_size):
            raise RagError(f"document {document.doc_id!r} came encoded for another index than {self.folder.path} "
                           "(its IVF training changed during the run?); nothing was written: run again")
        self.delete_document(collection, document.doc_id)
        rows = self.edits.store.rows
        rows.put_document(document, collection)
        if tokens is None:
            tokens = [self._bm25_tokens(c.embed_text) for c in chunks]
        ids = np.asarray(rows.add_chunks(chunks, tokens, collection), dtype=np.int64)
        if codes is not None:
            self.vectors.add_codes(codes, ids)
        else:
            self.vectors.add(vectors, ids)  # type: ignore[arg-type]
        self.changed = True

    @property
    def trained_template(self) -> Path | None:
        """The trained, empty IVF index every segment of this index starts from, once an earlier
        write trained one: what workers encode vectors for (VectorIndex.encode)."""
        if self._template is None:
            return None
        return self.folder.segments_root / self._template / TEMPLATE_FILE

    # -- commit --------------------------------------------------------------------------

    def commit(self) -> str | None:
        """Make the changes the live version; returns its name, or None when nothing changed."""
        if self._staging is None:
            raise RagError("commit() without begin()")
        if not self.changed:
            self.abort()
            return None
        try:
            records, written, next_id = self._finish_segment()
            records, next_segment = committing.merge_as_planned(
                self.folder, records, self._next_segment + 1, self._merge_all or self._retokenize,
                self.trained_template, self._bm25_tokens if self._retokenize else None, self.tokenizer.settings,
                self.reembed)
            if self.reembed is not None:
                self._template, self._template_files = self._retrained_template(records, next_segment)
                next_segment += 1
            base = self._base.counts if self._base is not None and self._base.segmented else {}
            manifest = committing.new_manifest(
                self._base_number + 1, self._base, committing.recorded_embedding(self._base, self.embedding),
                self.chunking, self._index_settings(),
                committing.version_counts(base, written, records), records, self._template, self._template_files,
                next_id, next_segment)
            name = committing.publish(self.folder, self._base_number + 1, manifest)
            committing.retire_old_versions(self.folder, name, self.folder.settings.keep_versions)
            remove_unnamed_segments(self.folder)
            return name
        except STORAGE_ERRORS as exc:
            raise self._storage_error(exc) from exc
        finally:
            self.abort()

    def _finish_segment(self) -> tuple[list[SegmentRecord], dict[str, int], int]:
        """Train what waits, tokenize, build the postings and move the new segment into place;
        returns the version's segments with it, what it added and tombstoned, and the next id."""
        vectors = self.vectors
        if not vectors.index.is_trained:
            vectors.flush()
        if self._template is None and self._needs_training():
            self._template, self._template_files = committing.save_template(self.folder, self._next_segment,
                                                                            vectors.index)
        log.info(COMMIT_STARTS)
        chunks, edits = self.chunks, self.edits
        assert chunks is not None
        chunks.rows.fill_tokens(self._bm25_tokens, self._retokenize)
        ids, tokens = edits.new_rows()
        postings = Postings.build(ids, (deserialize_tokens(t) for t in tokens), self.tokenizer.settings)
        next_id, written = edits.next_id(), edits.written()
        chunks.commit()
        chunks.close()
        self.chunks = None
        log.info("stage: writing FAISS index (%d vectors)", vectors.index.ntotal)
        name = segment_name(self._next_segment)
        record = finish_segment(self._staging, self.folder.segments_root / name, vectors.index, postings, name)  # type: ignore[arg-type]
        self._staging = None
        return [*self._segments, record], written, next_id

    def _retrained_template(self, records: list[SegmentRecord], number: int) -> tuple[str | None, dict[str, Any]]:
        """After a re-embed, the template later segments start from: trained on the new vectors
        (the one merged segment's), where the index type needs training."""
        settings = self.folder.settings
        held = [r for r in records if r.vectors]
        dimension = int(self.embedding["dimension"])
        if not held or VectorIndex.create(settings.factory, dimension, use_gpu=False).is_trained:
            return None, {}
        merged = VectorIndex.load(self.folder.segments_root / held[0].name / VECTORS_FILE, settings.factory, False)
        return committing.save_template(self.folder, number, merged)

    def _needs_training(self) -> bool:
        return VectorIndex.create(self.folder.settings.factory, int(self.embedding["dimension"]),
                                  use_gpu=False).is_trained is False and self.vectors.index.is_trained

    def _index_settings(self) -> dict[str, Any]:
        return {"factory": self.folder.settings.factory, "metric": "inner_product",
                "faiss_version": committing.faiss_version(), "bm25_tokenizer": self.tokenizer.settings,
                "bm25": self._bm25_parameters()}

    def _bm25_tokens(self, text: str) -> str:
        return bm25_tokens(self.tokenizer, text)

    def _bm25_parameters(self) -> dict[str, Any]:
        return BM25Index(self.tokenizer, k1=self.folder.settings.bm25_k1, b=self.folder.settings.bm25_b).settings
