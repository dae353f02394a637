"""LlamaIndex: a retriever over a `rag` index or a running `rag serve`, and a query engine that
answers with `rag`'s citations.

    from rag.integrations.llama_index import RagRetriever

    retriever = RagRetriever(index="indexes/company", k=5, filters=["collection=hr"])
    retriever = RagRetriever(url="http://localhost:8000", api_key=KEY)        # or a running rag serve
    nodes = retriever.retrieve("How many days of annual leave?")               # list[NodeWithScore]
    response = retriever.as_query_engine().query("How many days of annual leave?")
    print(response.response, response.metadata["citations"])

An optional extra (`pip install 'rag[llamaindex]'`, which brings llama-index-core only). The
retriever plugs into LlamaIndex wherever a `BaseRetriever` does (RetrieverQueryEngine, routers,
fusion retrievers); it translates to and from the Engine or the HTTP API and has no retrieval
logic of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from llama_index.core.base.base_query_engine import BaseQueryEngine
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.response.schema import Response
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("rag.integrations.llama_index needs llama-index-core: pip install 'rag[llamaindex]'") from exc

from rag.config import Settings
from rag.engine import Engine
from rag.errors import RagError
from rag.integrations.client import DEFAULT_TIMEOUT, Backend, Generator, Mode, connect, hit_metadata
from rag.records import Hit

__all__ = ["RagQueryEngine", "RagRetriever", "to_node"]

# Ids and scores help a program, not a model: LlamaIndex leaves these out of the text it embeds
# or puts in a prompt, and keeps title, source and location there (location already says the
# page or the heading path).
_NOT_FOR_MODELS = ["doc_id", "chunk_id", "chunk_ids", "score", "scores", "ordinal", "number", "cited", "headings",
                   "page"]


class RagRetriever(BaseRetriever):
    """Passages from a `rag` index as LlamaIndex `NodeWithScore`s, best first.

    Where from: `url` (and `api_key`) for a running `rag serve`; otherwise an index in this
    process: `index` (a path), `settings`, an existing `engine`, or, with none of them, the
    index `rag` is configured with. In this process, one Engine serves the retriever and its
    query engine, so models load once, on first use.

    `k`, `filters` (`rag search --filter` expressions such as "collection=hr") and `mode`
    ("hybrid", "dense", "bm25") go to every search as given; None means the index's own
    settings. A service adds its key's filters to them.

    Each node is a TextNode whose id is the chunk id, whose SOURCE relationship is the document
    id, and whose metadata holds doc_id, source, title, collection, location, page or headings,
    chunk_id, score, each retriever's score (`scores`) and the document's own metadata.
    """

    def __init__(self, index: str | Path | None = None, *, url: str | None = None, api_key: str | None = None,
                 k: int | None = None, filters: list[str] | None = None, mode: Mode | None = None,
                 timeout: float = DEFAULT_TIMEOUT, settings: Settings | None = None, engine: Engine | None = None,
                 callback_manager: CallbackManager | None = None, verbose: bool = False) -> None:
        if k is not None and not 1 <= k <= 1000:
            raise RagError(f"k must be between 1 and 1000, not {k}")
        if mode not in (None, "hybrid", "dense", "bm25"):
            raise RagError(f"mode must be hybrid, dense or bm25, not {mode!r}")
        self.k = k
        self.filters = list(filters or [])
        self.mode = mode
        self._backend: Backend = connect(index, url, api_key, engine=engine, settings=settings, timeout=timeout)
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [to_node(hit) for hit in self._backend.search(query_bundle.query_str, self.k, self.filters, self.mode)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = await self._backend.asearch(query_bundle.query_str, self.k, self.filters, self.mode)
        return [to_node(hit) for hit in hits]

    def as_query_engine(self, generator: Generator | None = None, k: int | None = None,
                        callback_manager: CallbackManager | None = None) -> RagQueryEngine:
        """A query engine that answers through the same index or service, with this retriever's
        filters (see RagQueryEngine)."""
        return RagQueryEngine(self._backend, self.filters, generator, k, callback_manager or self.callback_manager)

    def close(self) -> None:
        """Release the HTTP connections, or the Engine's open index (not an `engine` passed in)."""
        self._backend.close()


class RagQueryEngine(BaseQueryEngine):
    """`rag`'s own cited answer as a LlamaIndex Response, without a LlamaIndex LLM.

    `response.response` is the answer text with its `[n]` markers; `source_nodes` are the
    numbered passages the generator read (metadata `number`, and `cited` when the answer cites
    it); `response.metadata` is the rest of the `rag ask --json` object: `citations` (number,
    doc_id, source, title, location, quote), `abstained` (the passages do not hold the answer),
    `grounded`, `warnings`, `timings`, and from a service the answer's `id` for POST
    /v1/feedback. `generator` and `k` (passages given to the generator) default to the index's
    or service's own settings. Made by `RagRetriever.as_query_engine()`.
    """

    def __init__(self, backend: Backend, filters: list[str], generator: Generator | None = None,
                 k: int | None = None, callback_manager: CallbackManager | None = None) -> None:
        self._backend = backend
        self._filters = list(filters)
        self._generator = generator
        self._k = k
        super().__init__(callback_manager)

    def _query(self, query_bundle: QueryBundle) -> Response:
        return _response(self._backend.ask(query_bundle.query_str, self._k, self._filters, self._generator))

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        return _response(await self._backend.aask(query_bundle.query_str, self._k, self._filters, self._generator))

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}  # rag's prompts live in its config.toml ([prompt]), not in LlamaIndex


def to_node(hit: Hit) -> NodeWithScore:
    """A LlamaIndex node for one passage (see RagRetriever for its metadata)."""
    node = TextNode(id_=str(hit.chunk_id), text=hit.text, metadata=hit_metadata(hit),
                    relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.doc_id)},
                    excluded_embed_metadata_keys=_NOT_FOR_MODELS, excluded_llm_metadata_keys=_NOT_FOR_MODELS)
    return NodeWithScore(node=node, score=hit.score)


def _response(answer: dict[str, Any]) -> Response:
    cited = {c["number"] for c in answer["citations"]}
    nodes = []
    for passage in answer["passages"]:
        metadata = {key: value for key, value in passage.items() if key != "text"} | {
            "cited": passage["number"] in cited}
        node = TextNode(id_="-".join(str(c) for c in passage["chunk_ids"]), text=passage["text"], metadata=metadata,
                        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=passage["doc_id"])},
                        excluded_embed_metadata_keys=_NOT_FOR_MODELS, excluded_llm_metadata_keys=_NOT_FOR_MODELS)
        nodes.append(NodeWithScore(node=node, score=passage["score"]))
    metadata = {key: value for key, value in answer.items() if key not in ("answer", "passages")}
    return Response(response=answer["answer"], source_nodes=nodes, metadata=metadata)
