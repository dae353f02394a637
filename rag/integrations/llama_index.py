"""LlamaIndex: a retriever over a `rag` index or a running `rag serve`, and a query engine that
answers with `rag`'s citations.

    from rag.integrations.llama_index import RagRetriever

    retriever = RagRetriever(index="indexes/company", k=5, filters=["collection=hr"])
    retriever = RagRetriever(url="http://localhost:8000", api_key=KEY)        # or a running rag serve
    nodes = retriever.retrieve("How many days of annual leave?")               # list[NodeWithScore]
    response = retriever.as_query_engine().query("How many days of annual leave?")
    print(response.response, response.metadata["citations"])
    chat = retriever.as_chat_engine()                     # a conversation: follow-ups in context
    chat.chat("What does error code E-451 mean?")
    print(chat.chat("How do I fix it?").metadata["query"])  # what the follow-up was searched as

An optional extra (`pip install 'rag[llamaindex]'`, which brings llama-index-core only). The
retriever plugs into LlamaIndex wherever a `BaseRetriever` does (RetrieverQueryEngine, routers,
fusion retrievers); it translates to and from the Engine or the HTTP API and has no retrieval
logic of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    from llama_index.core.base.base_query_engine import BaseQueryEngine
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
    from llama_index.core.base.response.schema import Response
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine, StreamingAgentChatResponse
    from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("rag.integrations.llama_index needs llama-index-core: pip install 'rag[llamaindex]'") from exc

from rag.config import Settings
from rag.engine import Engine
from rag.integrations.client import (
    DEFAULT_TIMEOUT,
    Backend,
    Generator,
    Mode,
    check_k,
    check_mode,
    connect,
    hit_metadata,
    turns_of,
)
from rag.records import Hit

__all__ = ["RagChatEngine", "RagQueryEngine", "RagRetriever", "to_node"]

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
        self.k = check_k(k)
        self.filters = list(filters or [])
        self.mode = check_mode(mode)
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

    def as_chat_engine(self, generator: Generator | None = None, k: int | None = None,
                       chat_history: Sequence[ChatMessage] | None = None) -> RagChatEngine:
        """A chat engine that answers follow-ups in the context of the conversation so far,
        through the same index or service, with this retriever's filters (see RagChatEngine)."""
        return RagChatEngine(self._backend, self.filters, generator, k, chat_history)

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


class RagChatEngine(BaseChatEngine):
    """A conversation with `rag`, without a LlamaIndex LLM: each message is answered by `rag`
    with the turns before it, so a follow-up ("How do I fix it?") is searched as a standalone
    question (the response's `metadata["query"]`) and answered in context.

    The engine remembers the conversation itself (`chat_history`; `reset()` forgets it); a
    `chat_history` given to a call replaces what it remembered, as LlamaIndex's own chat engines
    do. Only user and assistant messages reach `rag` (system and tool messages are left out).
    One engine holds one conversation: give each user an engine of their own.

    `chat()` returns an AgentChatResponse: `response` is the answer text with `[n]` markers,
    `source_nodes` the numbered passages (metadata `cited` when the answer cites one), and
    `metadata` the rest of the `rag ask --json` object (citations, query, abstained, ...).
    `stream_chat()` answers in one piece: its stream yields the whole answer once, as the
    Backend answers whole (no metadata; the source nodes are there). Made by
    `RagRetriever.as_chat_engine()`.
    """

    def __init__(self, backend: Backend, filters: list[str], generator: Generator | None = None,
                 k: int | None = None, chat_history: Sequence[ChatMessage] | None = None) -> None:
        self._backend = backend
        self._filters = list(filters)
        self._generator = generator
        self._k = check_k(k)
        self._history: list[ChatMessage] = list(chat_history or [])

    @property
    def chat_history(self) -> list[ChatMessage]:
        return list(self._history)

    def reset(self) -> None:
        self._history = []

    def chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        if chat_history is not None:
            self._history = list(chat_history)
        answer = self._backend.ask(message, self._k, self._filters, self._generator, turns_of(self._history))
        return self._remember(message, answer)

    async def achat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        if chat_history is not None:
            self._history = list(chat_history)
        answer = await self._backend.aask(message, self._k, self._filters, self._generator,
                                          turns_of(self._history))
        return self._remember(message, answer)

    def stream_chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> StreamingAgentChatResponse:
        return _in_one_piece(self.chat(message, chat_history))

    async def astream_chat(self, message: str,
                           chat_history: list[ChatMessage] | None = None) -> StreamingAgentChatResponse:
        return _in_one_piece(await self.achat(message, chat_history))

    def _remember(self, message: str, answer: dict[str, Any]) -> AgentChatResponse:
        """The turn goes into the memory only once answered: a failed call leaves it as it was."""
        response = _response(answer)
        self._history += [ChatMessage(role=MessageRole.USER, content=message),
                          ChatMessage(role=MessageRole.ASSISTANT, content=answer["answer"])]
        return AgentChatResponse(response=answer["answer"], source_nodes=response.source_nodes,
                                 metadata=response.metadata)


def _in_one_piece(response: AgentChatResponse) -> StreamingAgentChatResponse:
    """A streaming response whose stream (sync and async) yields the whole answer once."""
    reply = ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=response.response),
                         delta=response.response)

    def stream() -> Iterator[ChatResponse]:
        yield reply

    async def astream() -> AsyncIterator[ChatResponse]:
        yield reply

    return StreamingAgentChatResponse(response=response.response, source_nodes=response.source_nodes,
                                      chat_stream=stream(), achat_stream=astream(), is_writing_to_memory=False)


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
