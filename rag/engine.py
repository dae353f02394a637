"""The library's front door: one object built from settings, which the CLI and API wrap."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence


from rag.citations import Answer, Retrieved
from rag.answering import Answerer, Rewriting
from rag.conversation import Turn, combined_query, needs_context, turns_from
from pydantic import ValidationError

from rag.config import IngestSettings, Settings
from rag.embed import Embedder
from rag.generate.factory import make_generator, rewrite_templates_from_settings, templates_from_settings
from rag.errors import ConfigError, RagError
from rag.index.manifest import Manifest, check_embedding
from rag.index.reader import IndexReader
from rag.index.store import IndexStore
from rag.index.writer import IndexWriter
from rag.filters import Access, Filter, access_filter, parse_filters
from rag.indexing import Indexer, IndexProgress, IndexReport, PreparerFactory
from rag.indexing.reembed import Reembedding, model_record
from rag.indexing.remote import SourceRun, origin_prefix, run_source
from rag.focus import focus_texts
from rag.prompt import PromptBuilder
from rag.records import Acl, CheckReport, DocumentDetail, DocumentPage, Facets, Hit, IndexInfo
from rag.retrieve import Mode, Reranker, Retriever
from rag.sources.registry import open_source
from rag.sources.settings import SourceSettings
from rag.sources.state import RunRecord, SourceState

if TYPE_CHECKING:
    from rag.cluster.ray_indexing import RayOptions

log = logging.getLogger(__name__)

# A conversation's earlier turns, oldest first: {"role": "user" | "assistant", "content": text}.
History = Sequence[Mapping[str, Any] | Turn]


def verify_mode(setting: str, generator: str) -> str:
    """answer.verify for a generator: "auto" abstains for local and extractive answers and only
    warns for an OpenAI-compatible model, whose paraphrases share fewer of the passage's words."""
    if setting != "auto":
        return setting
    return "warn" if generator == "openai" else "abstain"


def rewrite_mode(setting: str, generator: str) -> str:
    """answer.rewrite for a generator: "auto" has an OpenAI-compatible model rewrite follow-ups
    and combines them for the others. The embedded 1.5B model's rewrite took seconds on a 2-core
    CPU and found no more than the combined query (docs/benchmarks.md, conversation_bench), so
    it reads the turns when it answers instead; "rewrite" asks it anyway."""
    if setting != "auto":
        return setting
    return "rewrite" if generator == "openai" else "combine"


class Engine:
    """Index documents and search them. Models load on first use and are reused."""

    def __init__(self, settings: Settings | None = None, *, embedder: Embedder | None = None) -> None:
        self.settings = settings or Settings.load()
        self.store = IndexStore(self.settings.index.path, self.settings.index)
        self._embedder = embedder
        self._reader: IndexReader | None = None
        self._answerers: dict[str, Answerer] = {}
        self._answerers_lock = threading.Lock()  # one generator per name, however many threads ask
        self._reranker: Reranker | None = None
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.settings.embedding, self.embedder_cache())
        return self._embedder

    # -- writes --------------------------------------------------------------------------

    def index(self, paths: list[str | Path], progress: IndexProgress | None = None, sync: bool = False,
              replace: bool = False, collection: str | None = None, origin: str | None = None,
              ray: RayOptions | None = None, acl: Acl | None = None) -> IndexReport:
        """Add new and changed documents under `paths` to a collection (`ingest.collection` unless
        given; with `sync`, remove those of this collection and these paths no longer there); one
        atomic new index version. `replace` lets them replace same-id documents read from
        elsewhere; `origin` names where they come from when their files are only temporary;
        `ray` reads, chunks and embeds the files on a Ray cluster (the index is the same); `acl`
        is the access list of every document read from files with an `origin` (an upload's, which
        the request gives), records' own lists included."""
        return Indexer(self._for_collection(collection), self.embedder, self.store, replace, origin,
                       _preparer(ray), acl).run([Path(p) for p in paths], progress, sync)

    def index_source(self, declared: SourceSettings, progress: IndexProgress | None = None) -> SourceRun:
        """One run of a declared source (`[[sources]]`) into its collection: only new and changed
        items fetched, gone ones removed under index.sync_max_delete; its outcome and the items'
        versions recorded (the versions only once the run's index version is committed)."""
        state, started = SourceState(self.store.path), time.time()
        prefix = origin_prefix(declared.name)
        try:
            source = open_source(declared)
            held = ({d.doc_id for d in self.reader().chunks.rows.documents_in(declared.target)
                     if (d.origin or "").startswith(prefix)} if self.store.exists() else set())
            try:
                run = run_source(Indexer(self._for_collection(declared.target), self.embedder, self.store), source,
                                 state.versions(declared.name), held, declared.include, declared.exclude,
                                 progress, declared.sync)
            finally:
                source.close()
        except RagError as exc:
            state.finish(RunRecord(declared.name, started, time.time(), False, error=str(exc)), None)
            raise
        report = run.report
        state.finish(RunRecord(declared.name, started, time.time(), not report.failed, run.listed, run.fetched,
                               report.added, report.updated, report.unchanged, report.deleted, report.failed,
                               report.sync_stopped or None), run.versions)
        return run

    def index_jsonl(self, stream: Iterable[bytes], name: str = "stdin", progress: IndexProgress | None = None,
                    sync: bool = False, total_bytes: int = 0, replace: bool = False,
                    collection: str | None = None, ray: RayOptions | None = None,
                    origin: str | None = None) -> IndexReport:
        """Index {"id", "text", "metadata"} records streamed from a binary file object; `origin`
        tells whose records they are when not an operator's stream (they then never replace, nor
        are replaced or synced away by, a stream's records of the same id)."""
        return Indexer(self._for_collection(collection), self.embedder, self.store, replace, origin,
                       preparer=_preparer(ray)).run_jsonl(stream, name, progress, sync, total_bytes)

    def _for_collection(self, collection: str | None) -> Settings:
        """The settings, indexing into `collection` when one is given (checked like the setting)."""
        if collection is None:
            return self.settings
        try:
            ingest = IngestSettings.model_validate({**self.settings.ingest.model_dump(), "collection": collection})
        except ValidationError as exc:
            raise ConfigError(f"collection {collection!r}: {exc.errors()[0]['msg']}") from None
        return self.settings.model_copy(update={"ingest": ingest})

    # -- reads ---------------------------------------------------------------------------

    def reader(self) -> IndexReader:
        """The latest committed version; reopened when a writer has committed a newer one."""
        with self._lock:
            current = self.store.current_version()
            if self._reader is None or self._reader.version != current:
                reader = self.store.open_reader()
                check_embedding(self.store.path, reader.manifest.embedding, self.embedder.identity())
                # The previous reader is not closed here: a search in another thread may still be
                # using it. It closes when the last reference to it goes.
                self._reader = reader
            return self._reader

    def retriever(self) -> Retriever:
        """Over the latest committed version; the reranker (if configured) loads once."""
        if self._reranker is None and self.settings.search.reranker:
            self._reranker = Reranker(self.settings.search.reranker)
        return Retriever(self.reader(), self.embedder, self.settings.search, self.settings.embedding.languages,
                         self._reranker)

    def search(self, question: str, k: int | None = None, filters: list[str] | None = None,
               mode: Mode | None = None, history: History | None = None, access: Access | None = None) -> list[Hit]:
        """Ranked passages; `filters` are `--filter` expressions such as "source=hr/*.md";
        `history`, the conversation's earlier turns ({"role", "content"}, oldest first): a
        follow-up is searched as `search_query` says."""
        return self.search_many([question], k, filters, mode, histories=[history or []], access=access)[0]

    def search_many(self, questions: list[str], k: int | None = None, filters: list[str] | None = None,
                    mode: Mode | None = None, timings: dict[str, float] | None = None,
                    histories: list[History] | None = None, access: Access | None = None) -> list[list[Hit]]:
        questions = [q.strip() for q in questions]
        if not all(questions):
            raise RagError("the question is empty")
        k = k or self.settings.search.k
        parsed = self.scope(filters, access)  # a bad filter is reported before any model loads
        if histories:
            questions = [self.search_query(q, h) for q, h in zip(questions, histories)]
        return self.retriever().search_many(questions, k, timings, parsed, mode)

    def scope(self, filters: list[str] | None, access: Access | None = None) -> list[Filter]:
        """The filters, and what `access` (a person) may read: applied inside retrieval, and in
        every listing, like a key's filters."""
        parsed = parse_filters(filters)
        if access is not None:
            parsed.append(access_filter(access, dict(self.settings.access.collections), self.settings.access.default))
        return parsed

    def search_query(self, question: str, history: History | None = None) -> str:
        """What a search runs on: the question, or for a follow-up ("and in Shanghai?") the
        question with the user's previous one (rag.conversation.combined_query: no model, so a
        search stays a search; answers may have their generator rewrite it instead)."""
        turns = turns_from(history)
        if not turns or self.settings.answer.rewrite == "off" or not needs_context(question, turns):
            return question
        return combined_query(question, turns)

    def delete(self, doc_ids: list[str], collection: str | None = None,
               filters: list[str] | None = None, access: Access | None = None) -> tuple[list[str], list[str]]:
        """Remove documents by their exact ids (never read as patterns) in one atomic version;
        returns (deleted, not found). Without a collection, an id must be in exactly one. With
        `filters` (a key's), a document they do not match counts as not found, as it is checked
        under the write lock, where no other write can change it first."""
        parsed = self.scope(filters, access)
        deleted, missing = [], []
        with self._writer_for_removal() as writer:
            for doc_id in dict.fromkeys(doc_ids):
                holders = [collection] if collection is not None else writer.collections_of(doc_id)
                if len(holders) > 1:
                    raise RagError(f"document id {doc_id!r} is in collections {', '.join(holders)}; say which "
                                   "with --collection NAME. Nothing was deleted.")
                exact = [Filter("collection", "=", holders[0]), Filter("doc_id", "=", doc_id)] if holders else []
                allowed = bool(holders) and (not parsed or bool(writer.matching_documents(parsed + exact)))
                if allowed and writer.delete_document(holders[0], doc_id):
                    deleted.append(doc_id)
                    deleted.extend(_delete_attachments(writer, holders[0], doc_id, parsed))
                else:
                    missing.append(doc_id)
        return deleted, missing

    def delete_matching(self, filters: list[str], access: Access | None = None) -> list[tuple[str, str]]:
        """Remove every document matching all the filters (at least one) in one atomic version;
        returns their (collection, doc_id)."""
        if not parse_filters(filters):  # a person's access alone is not a selection
            raise RagError("deleting by filter needs at least one filter; nothing was deleted")
        parsed = self.scope(filters, access)
        with self._writer_for_removal() as writer:
            matched = writer.matching_documents(parsed)
            for collection, doc_id in matched:
                writer.delete_document(collection, doc_id)
        return matched

    def compact(self) -> int:
        """Merge every segment into one without the vectors of deleted chunks; returns how many were dropped."""
        with self._writer_for_removal() as writer:
            return writer.compact()

    def reembed(self, model: str | Embedder, progress: IndexProgress | None = None) -> str:
        """Make every vector again with another embedding model (a folder, e.g. `rag tune`'s, or
        an Embedder), keeping chunks, texts and BM25, in one atomic new version; returns its name.
        Searches answer from the old version meanwhile; afterwards the index takes only the new
        model (its manifest records the model's identity, folder and hash)."""
        new = model if isinstance(model, Embedder) else Embedder(
            self.settings.embedding.model_copy(update={"model": model}), self.embedder_cache())
        base = Manifest.read(self.store.path / self.store.live_version())
        identity = {**new.identity(), **model_record(new.settings.model)}
        # Later writes chunk with the new model's tokenizer: the index must take them.
        chunking = {**base.chunking, "tokenizer": new.name}
        work = Reembedding(new, bool(base.chunking.get("heading_prefix")), progress)
        with self.store.open_writer(identity, chunking, reembed=work):
            pass
        return self.store.current_version()

    def embedder_cache(self) -> Path | None:
        cache = self.settings.generate.cache_dir
        return Path(cache) if cache else None

    def _writer_for_removal(self) -> IndexWriter:
        """A writer that embeds nothing, so it takes the live version's model identity from its
        manifest instead of loading the embedding model."""
        manifest = Manifest.read(self.store.path / self.store.live_version())
        return self.store.open_writer(manifest.embedding, manifest.chunking)

    # -- answers -------------------------------------------------------------------------

    def _focus(self) -> Callable[[str, list[str]], list[str]] | None:
        keep = self.settings.generate.local_focus_sentences
        if not keep:
            return None
        return lambda question, texts: focus_texts(self.embedder, question, texts, keep)

    def answerer(self, generator: str | None = None) -> Answerer:
        """The answering pipeline for a generator (the configured one by default); cached."""
        name = generator or self.settings.answer.generator
        with self._answerers_lock:
            if name not in self._answerers:
                self._answerers[name] = self._new_answerer(name)
            return self._answerers[name]

    def _new_answerer(self, name: str) -> Answerer:
        gen = make_generator(self.settings, self.embedder, name)
        builder = PromptBuilder(templates_from_settings(self.settings), gen.count_tokens,
                                self.settings.answer.context_tokens or gen.context_tokens,
                                self.settings.answer.max_new_tokens,
                                self.settings.generate.local_max_passages if name == "local" else 0,
                                self._focus() if name == "local" else None)

        def retrieve(questions: list[str], k: int, timings: dict[str, float],
                     filters: list[Filter] | None, mode: str | None) -> list[list[Hit]]:
            return self.retriever().search_many(questions, k, timings, filters, mode)  # type: ignore[arg-type]

        answer = self.settings.answer
        rewriting = Rewriting(rewrite_mode(answer.rewrite, name), rewrite_templates_from_settings(self.settings),
                              answer.rewrite_max_tokens, answer.rewrite_timeout)
        return Answerer(retrieve, gen, builder, answer.k, answer.max_new_tokens, answer.max_question_chars,
                        answer.min_relevance, verify_mode(answer.verify, name), answer.verify_min_words, rewriting)

    def ask(self, question: str, k: int | None = None, generator: str | None = None,
            filters: list[str] | None = None, mode: Mode | None = None, history: History | None = None,
            access: Access | None = None) -> Answer:
        """A cited answer from the passages, or an honest "I don't know"; `mode` is the search
        mode of its retrieval (search.mode by default); `history`, the conversation's earlier
        turns ({"role": "user"|"assistant", "content"}, oldest first): a follow-up is searched
        as a standalone question (the Answer's `query`) and answered in context."""
        parsed = self.scope(filters, access)
        return self.answerer(generator).ask(question, k, parsed, mode, turns_from(history))

    def ask_many(self, questions: list[str], k: int | None = None, generator: str | None = None,
                 filters: list[str] | None = None, mode: Mode | None = None,
                 histories: list[History] | None = None, access: Access | None = None) -> list[Answer]:
        parsed = self.scope(filters, access)
        turns = [turns_from(h) for h in histories] if histories else None
        return self.answerer(generator).ask_many(questions, k, parsed, mode, turns)

    def ask_stream(self, question: str, k: int | None = None, generator: str | None = None,
                   filters: list[str] | None = None, mode: Mode | None = None,
                   history: History | None = None, access: Access | None = None) -> Iterator[Retrieved | str | Answer]:
        """What was searched with the numbered passages given to the generator (Retrieved), text
        pieces as they are generated, then the finished Answer."""
        parsed = self.scope(filters, access)
        return self.answerer(generator).ask_stream(question, k, parsed, mode, turns_from(history))

    def documents(self, filters: list[str] | None = None, offset: int = 0, limit: int = 100,
                  access: Access | None = None) -> DocumentPage:
        """One page of the indexed documents matching the filters, in collection and id order."""
        parsed = self.scope(filters, access)
        total, page = self.reader().chunks.catalog.list_documents(parsed, offset, limit)
        return DocumentPage(total, offset, limit, page)

    def facets(self, filters: list[str] | None = None, access: Access | None = None) -> Facets:
        """What the documents matching the filters are made of: per collection, format and
        top-level source folder, how many and the filter that selects them, and the mtime range;
        for filter controls built from the index itself (a portal's), never offering a dead end."""
        return self.reader().chunks.catalog.facets(self.scope(filters, access))

    def document(self, doc_id: str, collection: str | None = None,
                 filters: list[str] | None = None, access: Access | None = None) -> list[DocumentDetail]:
        """The documents with this id (one per collection holding it, or just `collection`'s)
        that match the filters, each with its chunks in order."""
        parsed = self.scope(filters, access) + [Filter("doc_id", "=", doc_id)]
        if collection is not None:
            parsed.append(Filter("collection", "=", collection))
        reader = self.reader()
        catalog = reader.chunks.catalog
        _, found = catalog.list_documents(parsed, 0, 1000)
        return [DocumentDetail(**{**asdict(doc), "chunks": catalog.document_chunks(doc.collection, doc.doc_id)})
                for doc in found]

    def info(self) -> IndexInfo:
        """The manifest of the live version, with counts, its segments and size on disk."""
        return self.store.describe()

    def check(self) -> CheckReport:
        """Problems with the live version (none when sound): files, checksums, FAISS, rows, BM25."""
        return self.store.check()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _preparer(ray: RayOptions | None) -> PreparerFactory | None:
    if ray is None:
        return None
    from rag.cluster.ray_indexing import ray_preparer

    return ray_preparer(ray)


def _delete_attachments(writer: IndexWriter, collection: str, parent: str, filters: list[Filter]) -> list[str]:
    """An e-mail's attachments (documents whose `parent` it is, and theirs), deleted with it: those
    the filters (a key's) also match, and no others."""
    deleted = []
    for _, child in writer.matching_documents(filters + [Filter("collection", "=", collection),
                                                         Filter("parent", "=", parent)]):
        if writer.delete_document(collection, child):
            deleted.append(child)
            deleted.extend(_delete_attachments(writer, collection, child, filters))
    return deleted
