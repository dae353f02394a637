"""Indexing on Ray: files read, chunked and embedded by Ray Data actors, written by one writer.

`rag index --ray` keeps the single-process pipeline's decisions and only moves its heavy work:
the files (or, for `--jsonl`, the records the writer has read) become a Ray Dataset, and
`map_batches` hands them to actors that each load the embedding model once (one GPU each where
the cluster has GPUs, a share of one when there are more actors than GPUs) and return every
document with its chunks, vectors and BM25 tokens; for an IVF index an earlier write trained,
the vectors come encoded for it (list and code, as FAISS stores them), so that the writer's
share of an IVF add, assigning lists and encoding, is done on the workers too. The writer takes
them back in their original order (Ray Data's `preserve_order`) and decides about each exactly
as it decides about a file it loaded itself: new, changed, unchanged, a duplicate id, content
already held by another document. So the index is the one a single process builds, with the
same chunk ids; only the vectors may differ in their last bits (other embedding batches).

Actors skip the documents whose content the index already holds under their id (the writer
tells them which, under its lock), so a nightly run over a mostly unchanged corpus embeds only
what changed. Rows cross the cluster as Arrow tables of JSON text and raw bytes (float32 vectors,
or codes; `rag.cluster.wire`), never as pickles of what a user's files hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.cluster import wire
from rag.config import Settings
from rag.errors import ConfigError, RagError
from rag.index.tokens import bm25_tokens, make_tokenizer
from rag.idsets import held_in
from rag.index.vectors import VectorIndex
from rag.indexing import IndexState, Prepared, PreparerFactory, loaded_documents, make_chunker
from rag.ingest.loaders import FileReader
from rag.ingest.discover import SourceFile
from rag.records import Document

log = logging.getLogger(__name__)

# Sources an actor takes per call: small, since one file may hold many documents.
FILES_PER_CALL = 8
RECORDS_PER_CALL = 256
# JSON Lines records go to the cluster this many at a time, so a stream of millions is never
# held in memory at once; each window starts its actors (and loads their model) again.
RECORD_WINDOW = 50_000


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run: `address` None starts a local Ray cluster for the run."""

    address: str | None = None
    # Embedding actors; None: one per GPU on a cluster with GPUs, else one per four CPUs.
    workers: int | None = None
    # Times a worker that dies (a node lost, memory exhausted) is restarted and its batch run
    # again; None: as often as it takes (Ray Data's own default for actor pools).
    retries: int | None = None


def ray_preparer(options: RayOptions) -> PreparerFactory:
    """What `Indexer(preparer=...)` takes to prepare a run's documents on Ray."""
    return lambda settings, origin: RayPreparer(settings, origin, options)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the extra's point)
    except ImportError:
        raise ConfigError("--ray needs Ray Data on this machine and the cluster: pip install 'rag[ray]'") from None
    return ray


class RayPreparer:
    """Prepares a run's documents on a Ray cluster, started here or reached at an address."""

    def __init__(self, settings: Settings, origin: str | None, options: RayOptions) -> None:
        self.settings = settings
        self.origin = origin
        self.options = options
        self.state: IndexState | None = None

    # -- the Preparer protocol --------------------------------------------------------------

    def start(self, state: IndexState) -> None:
        self.state = state

    def files(self, files: list[SourceFile]) -> Iterator[Iterable[Document | Prepared | RagError]]:
        units = [{"unit": n, "path": str(f.path), "rel": f.rel, "real": str(f.real), "record": ""}
                 for n, f in enumerate(files)]
        if units:
            with self._cluster() as ray:
                yield from self._run(ray, units, self._index_state(ray))

    def documents(self, items: Iterable[Document | RagError]) -> Iterator[Document | Prepared | RagError]:
        window: list[Document | RagError] = []
        with self._cluster() as ray:  # one cluster, and one look at the index, for every window
            state = self._index_state(ray)
            for item in items:
                window.append(item)
                if len(window) >= RECORD_WINDOW:
                    yield from self._records(ray, window, state)
                    window = []
            if window:
                yield from self._records(ray, window, state)

    # -- running on the cluster -------------------------------------------------------------

    @contextmanager
    def _cluster(self) -> Iterator[Any]:
        """Ray, connected: to the cluster already joined in this process, to the one at the
        address, or to one started on this machine for the run and stopped after it."""
        ray = _ray()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.options.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        try:
            yield ray
        finally:
            if started_here:
                ray.shutdown()

    def _index_state(self, ray: Any) -> dict[str, Any]:
        """What the actors need to know of the index, in the object store (a node's actors share
        it without copying), taken under the writer's lock at the start of the run: the sorted keys
        of the content it holds, so that actors skip unchanged documents, and the IVF index an
        earlier write trained, if any, so that they encode the vectors for it (the writer then
        stores codes instead of assigning and encoding every vector itself). Documents this run
        writes need not be in it: the writer refuses a second document of the same id."""
        if self.state is None:
            raise RuntimeError("a Ray preparer runs only after Indexer handed it the index's state (start)")
        trained = self.state.trained_template
        if trained is not None:
            log.info("Ray: actors encode vectors for the index's trained %s", self.settings.index.factory)
        return {"stored": ray.put(content_keys(self.state.stored_content)),
                "template": ray.put(np.fromfile(trained, dtype=np.uint8)) if trained is not None else None}

    def _records(self, ray: Any, window: list[Document | RagError],
                 state: dict[str, Any]) -> Iterator[Document | Prepared | RagError]:
        documents = [item for item in window if isinstance(item, Document)]
        units = [{"unit": n, "path": "", "rel": "", "real": "",
                  "record": wire.dumps(wire.document_to_json(document))} for n, document in enumerate(documents)]
        prepared = (item for group in (self._run(ray, units, state) if units else ()) for item in group)
        for item in window:
            # Errors stay where they were read; documents come back prepared, in order.
            yield next(prepared) if isinstance(item, Document) else item

    def _run(self, ray: Any, units: list[dict[str, Any]],
             state: dict[str, Any]) -> Iterator[list[Document | Prepared | RagError]]:
        with warnings.catch_warnings():  # Ray's own settings it renamed, read as it starts
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the writer takes documents in source order
        context.enable_progress_bars = False  # the CLI draws its own
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-dataset INFO lines
            # and its warning that progress bars are off, which they are because the CLI draws its own
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        workers = self.options.workers or (gpus if gpus else max(1, cpus // 4))
        if workers < 1:
            raise ConfigError(f"--ray-workers {workers}: give at least 1")
        settings = self.settings
        # Each actor a GPU of its own; more actors than GPUs share them (Ray's fractional GPUs,
        # in its steps of 0.0001), rather than waiting for GPUs that never come free.
        gpus_each = math.floor(10_000 * min(1.0, gpus / workers)) / 10_000 if gpus else 0.0
        log.info("Ray: %d embedding actors (%s), %d sources", workers,
                 f"{gpus_each:g} GPU each" if gpus else f"{max(1, cpus // workers)} threads each", len(units))
        per_call = RECORDS_PER_CALL if units[0]["record"] else FILES_PER_CALL
        blocks = max(1, -(-len(units) // per_call))
        dataset = ray.data.from_items(units, override_num_blocks=blocks)
        retries = self.options.retries
        extra: dict[str, Any] = {}
        if retries is not None:
            # Ray 2.60 has no named parameter for it yet (the one it names instead comes in 2.64).
            extra["ray_remote_args_fn"] = lambda: {"max_restarts": retries, "max_task_retries": retries}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            prepared = dataset.map_batches(
                PrepareActor, batch_size=per_call, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)), num_gpus=gpus_each,
                num_cpus=1, fn_constructor_kwargs={
                    "settings": settings.model_dump_json(), "origin": self.origin, **state,
                    "threads": 0 if gpus else max(1, cpus // workers)}, **extra)
        unit, group = 0, []
        placements: set[tuple[str, str]] = set()  # (GPU ids Ray gave an actor, where it embedded)
        for batch in _failing_clearly(prepared.iter_batches(batch_size=None, batch_format="pyarrow")):
            for row in batch.to_pylist():
                if row["unit"] != unit:
                    raise RagError(f"Ray returned source {row['unit']} where {unit} was due; run again")
                if row["kind"] == "end":
                    placement = json.loads(row["payload"])
                    seen = (",".join(placement["gpus"]), placement["device"])
                    if seen not in placements:  # said as soon as seen: the writer may stop reading at the last source
                        placements.add(seen)
                        _report_placement(*seen)
                    yield group
                    unit, group = unit + 1, []
                else:
                    group.append(_item(row, encoded=state["template"] is not None))
        if unit != len(units):
            raise RagError(f"Ray returned {unit} of {len(units)} sources; run again")


def _report_placement(gpus: str, device: str) -> None:
    """Say where an actor embedded; warn when Ray gave it a GPU its torch cannot use (a CPU build
    of torch on GPU workers embeds on the CPU, many times slower, and nothing else fails)."""
    log.info("Ray: an embedding actor on %s%s", device, f" (GPU {gpus})" if gpus else "")
    if gpus and not device.startswith("cuda"):
        log.warning("Ray gave an embedding actor GPU %s, but it embedded on the CPU: torch on the cluster's "
                    "workers sees no CUDA device (a CPU build of torch, or no driver); install a CUDA build of "
                    "torch there", gpus)


def content_key(doc_id: str, sha256: str) -> int:
    """A document's id and content as 8 bytes: what actors look up to skip content the index holds.
    Two different pairs share a key with a chance of about one in 10^19 per pair (BLAKE2b); the
    cost of one would be an error, not a wrong index: the writer refuses a document that comes
    back unprepared when it needs its chunks."""
    digest = hashlib.blake2b(f"{doc_id}\0{sha256}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def content_keys(pairs: Iterable[tuple[str, str]]) -> np.ndarray:
    """The sorted keys of (id, sha256) pairs: 8 bytes a document, where a dict of ids and hashes
    took about 200 (100 million documents: 0.8 GB in the object store)."""
    return np.sort(np.fromiter((content_key(doc_id, sha) for doc_id, sha in pairs), dtype=np.uint64))


def holds(keys: np.ndarray, key: int) -> bool:
    """Whether the sorted `keys` (content_keys) hold `key`."""
    return bool(held_in(np.array([key], dtype=np.uint64), keys)[0])


def _failing_clearly(batches: Iterator[Any]) -> Iterator[Any]:
    """The batches; a job Ray gives up on (workers dead past their retries, the cluster lost)
    becomes one RagError: the writer then discards the run and the live version stays."""
    import ray
    import ray.data.exceptions

    try:
        yield from batches
    except (ray.exceptions.RayError, ray.data.exceptions.UserCodeException, ray.data.exceptions.SystemException) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RagError(f"the Ray job failed ({type(exc).__name__}: {first[:300]}); nothing was indexed and the "
                       "index is unchanged; run again (RayOptions.retries, --ray-retries, restarts dead "
                       "workers)") from exc


def _item(row: dict[str, Any], encoded: bool) -> Document | Prepared | RagError:
    data = json.loads(row["payload"])
    if row["kind"] == "problem":
        return wire.problem_from_json(data)
    document = wire.document_from_json(data["document"])
    if data["chunks"] is None:
        return Prepared(document, None, None)
    chunks = [wire.chunk_from_json(c) for c in data["chunks"]]
    if not chunks:
        return Prepared(document, chunks, None, data.get("tokens"))
    given = wire.vectors_from_bytes(row["vectors"], len(chunks), encoded)
    return Prepared(document, chunks, None if encoded else given, data.get("tokens"), given if encoded else None)


class PrepareActor:
    """A Ray actor: loads the embedding model once, then loads, chunks and embeds sources."""

    def __init__(self, settings: str, origin: str | None, stored: Any, threads: int, template: Any = None) -> None:
        import ray

        if threads:
            import torch

            torch.set_num_threads(threads)
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        from rag.embed import Embedder

        self.settings = Settings.model_validate_json(settings)
        self.origin = origin
        # Ray resolves a reference passed as an argument (a test passes the arrays themselves).
        self.stored: np.ndarray = stored if isinstance(stored, np.ndarray) else ray.get(stored)
        # A file the index holds unchanged is not parsed (nor read by OCR) again.
        self.reader = FileReader(self.settings.ingest,
                                 holds=lambda doc_id, sha: holds(self.stored, content_key(doc_id, sha)))
        self.embedder = Embedder(self.settings.embedding)
        self.embedder.warm_up()
        # Where this actor embeds, reported with every source so the writer can tell the user.
        self.placement = json.dumps({"gpus": [str(g) for g in ray.get_gpu_ids()], "device": self.embedder.device})
        self.chunker = make_chunker(self.settings, self.embedder)
        self.tokenizer = make_tokenizer(self.settings.index)  # the BM25 tokens, the writer's own settings
        if template is not None and not isinstance(template, np.ndarray):
            template = ray.get(template)
        # The index's trained IVF index, where it has one: vectors go back encoded for it.
        self.encoder = VectorIndex.from_bytes(template, self.settings.index.factory) if template is not None else None

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {"unit": [], "kind": [], "payload": [], "vectors": []}
        to_embed: list[tuple[int, list[Any]]] = []  # (row, chunks) of the documents to embed
        for unit in batch.to_pylist():
            for item in self._load(unit):
                rows["unit"].append(unit["unit"])
                rows["vectors"].append(b"")
                if isinstance(item, RagError):
                    rows["kind"].append("problem")
                    rows["payload"].append(wire.dumps(wire.problem_to_json(item)))
                    continue
                rows["kind"].append("document")
                chunks = None
                if not holds(self.stored, content_key(item.doc_id, item.metadata.get("sha256", ""))):
                    chunks = self.chunker.chunk(item)
                    if chunks:
                        to_embed.append((len(rows["payload"]), chunks))
                # The writer needs no sections once the chunks are made, nor for content it holds.
                rows["payload"].append(wire.dumps({
                    "document": wire.document_to_json(item, sections=False),
                    "chunks": None if chunks is None else [wire.chunk_to_json(c) for c in chunks],
                    "tokens": None if chunks is None else [bm25_tokens(self.tokenizer, c.embed_text) for c in chunks]}))
            rows["unit"].append(unit["unit"])
            rows["kind"].append("end")
            rows["payload"].append(self.placement)
            rows["vectors"].append(b"")
        if to_embed:
            every = [c for _, chunks in to_embed for c in chunks]
            vectors = self.embedder.embed_passages([c.embed_text for c in every], [c.token_ids for c in every])
            encoded = self.encoder.encode(vectors) if self.encoder is not None else None
            offset = 0
            for row, chunks in to_embed:
                part = slice(offset, offset + len(chunks))
                rows["vectors"][row] = encoded[part].tobytes() if encoded is not None else \
                    wire.vectors_to_bytes(vectors[part])
                offset += len(chunks)
        return rows

    def _load(self, unit: dict[str, Any]) -> Iterable[Document | RagError]:
        if unit["record"]:
            return [wire.document_from_json(json.loads(unit["record"]))]
        source = SourceFile(Path(unit["path"]), unit["rel"], Path(unit["real"]))
        return loaded_documents(source, self.reader, self.origin)
