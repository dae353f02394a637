"""LangChain: a retriever over a `rag` index or a running `rag serve`, and a runnable that answers.

    from rag.integrations.langchain import RagRetriever

    retriever = RagRetriever(index="indexes/company", k=5, filters=["collection=hr"])
    retriever = RagRetriever(url="http://localhost:8000", api_key=KEY)      # or a running rag serve
    docs = retriever.invoke("How many days of annual leave?")                # list[Document]
    docs = retriever.invoke("How many days of annual leave?", k=2)           # per call: k, filters, mode, history
    reply = retriever.as_answerer().invoke("How many days of annual leave?")  # dict: answer, citations, query, ...
    reply = retriever.as_answerer().invoke([HumanMessage("What does E-451 mean?"), AIMessage("The lidar..."),
                                            HumanMessage("How do I fix it?")])  # a follow-up, in context

Needs only langchain-core (`pip install 'rag[langchain]'`). The retriever is a plain
`BaseRetriever`, so it composes like any other (`retriever | format_docs`, `.batch`, `.ainvoke`,
callbacks and tracing); it translates to and from the Engine or the HTTP API and has no
retrieval logic of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, SecretStr

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("rag.integrations.langchain needs langchain-core: pip install 'rag[langchain]'") from exc

from rag.config import Settings
from rag.engine import Engine
from rag.errors import RagError
from rag.integrations.client import (
    DEFAULT_TIMEOUT,
    Backend,
    Generator,
    Mode,
    Turns,
    check_filters,
    check_k,
    check_mode,
    connect,
    conversation_of,
    hit_metadata,
    turns_of,
)
from rag.records import Hit

# What a search may be given, besides the question: the retriever's own fields, per call.
Input = str | dict[str, Any] | Sequence[Any]

__all__ = ["RagRetriever", "to_document"]


class RagRetriever(BaseRetriever):
    """Passages from a `rag` index as LangChain `Document`s, best first.

    Where from: `url` (and `api_key`) for a running `rag serve`; otherwise an index in this
    process: `index` (a path), `settings`, an existing `engine`, or, with none of them, the
    index `rag` is configured with. In this process, one Engine serves the retriever and its
    answerer, so models load once, on first use.

    `k`, `filters` (`rag search --filter` expressions such as "collection=hr" or
    "source=hr/*") and `mode` ("hybrid", "dense", "bm25") go to every search as given; None
    means the index's own settings. A service adds its key's filters to them. One call may
    give its own (`retriever.invoke(question, k=1, filters=[...], mode="bm25")`), which then
    replace the retriever's for that call, and a `history` (messages before the question).

    The input is the question's text, a dict with "question" (and "chat_history" or "history"
    messages for a follow-up), or a list of LangChain messages whose last human message is the
    question; the human and AI messages before it are the conversation, which a follow-up
    ("How do I fix it?") is searched in (system and tool messages are left out; see
    rag.integrations.client.conversation_of).

    Each Document's `page_content` is the passage; its `metadata` holds doc_id, source, title,
    collection, location ("page 2" or "Handbook > Leave"), page or headings, chunk_id, score,
    each retriever's score (`scores`), and any metadata the document was indexed with; its `id`
    is the chunk id.
    """

    index: str | Path | None = None
    url: str | None = None
    api_key: SecretStr | None = None
    k: int | None = Field(default=None, ge=1, le=1000)
    filters: list[str] = Field(default_factory=list)
    mode: Mode | None = None
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, description="seconds, for a rag serve")
    settings: Settings | None = Field(default=None, repr=False)
    engine: Engine | None = Field(default=None, repr=False, exclude=True)

    _backend: Backend = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._backend = connect(self.index, self.url, self.api_key.get_secret_value() if self.api_key else None,
                                engine=self.engine, settings=self.settings, timeout=self.timeout)

    def invoke(self, input: Input, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """Documents for a question, or for the last question of a conversation (see the class)."""
        question, kwargs = _with_history(input, kwargs)
        return super().invoke(question, config, **kwargs)  # callbacks and tracing see the question's text

    async def ainvoke(self, input: Input, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """Documents for a question, or for the last question of a conversation (see the class)."""
        question, kwargs = _with_history(input, kwargs)
        return await super().ainvoke(question, config, **kwargs)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **options: Any) -> list[Document]:
        return [to_document(hit) for hit in self._backend.search(query, *self._options(options))]

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       **options: Any) -> list[Document]:
        return [to_document(hit) for hit in await self._backend.asearch(query, *self._options(options))]

    def _options(self, options: dict[str, Any]) -> tuple[int | None, list[str], Mode | None, Turns]:
        """This call's k, filters, mode and history: the call's own where given, else the
        retriever's, checked as the fields are (a misspelt option is an error, not ignored)."""
        options = {key: value for key, value in options.items() if key != "verbose"}  # LangChain's own flag
        unknown = sorted(set(options) - {"k", "filters", "mode", "history"})
        if unknown:
            raise RagError(f"RagRetriever takes k, filters, mode and history per call, not {', '.join(unknown)}")
        k = check_k(options["k"]) if options.get("k") is not None else self.k
        filters = check_filters(options["filters"]) if options.get("filters") is not None else self.filters
        mode = check_mode(options["mode"]) if options.get("mode") is not None else self.mode
        return k, filters, mode, turns_of(options.get("history"))

    def as_answerer(self, generator: Generator | None = None,
                    k: int | None = None) -> Runnable[Input, dict[str, Any]]:
        """A runnable from a question to `rag`'s cited answer: the `rag ask --json` object,
        whose main keys are `answer` (text with `[n]` markers), `citations` (number, doc_id,
        source, title, location, quote), `abstained` (True when the passages do not hold the
        answer), `grounded` and `query` (what was searched: the question, or a follow-up's
        standalone form); from a service, also the answer's `id` for POST /v1/feedback.

        The question comes as the retriever's does: text, a dict with "question" (and
        "chat_history" messages), or a list of messages whose last human message is asked in
        the context of the human and AI messages before it (system and tool messages left out).

        It asks through the same index or service, with this retriever's filters; `generator`
        ("local", "openai", "extractive") and `k` (passages given to the generator) default to
        the index's or service's own settings. `rag` retrieves for itself here, so the answer
        cites exactly the passages its generator read.
        """
        backend, filters, k = self._backend, list(self.filters), check_k(k)

        def answer(value: Input) -> dict[str, Any]:
            question, history = conversation_of(value)
            return backend.ask(question, k, filters, generator, history)

        async def aanswer(value: Input) -> dict[str, Any]:
            question, history = conversation_of(value)
            return await backend.aask(question, k, filters, generator, history)

        return RunnableLambda(answer, afunc=aanswer, name="RagAnswer")

    def close(self) -> None:
        """Release the HTTP connections, or the Engine's open index (not an `engine` passed in)."""
        self._backend.close()


def to_document(hit: Hit) -> Document:
    """A LangChain Document for one passage (see RagRetriever for its metadata)."""
    return Document(page_content=hit.text, metadata=hit_metadata(hit), id=str(hit.chunk_id))


def _with_history(value: Input, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The question's text, and the call's options with the history the input carried (given
    both as messages and as history=, it would be ambiguous which to search with)."""
    question, history = conversation_of(value)
    if history:
        if kwargs.get("history") is not None:
            raise RagError("the input already holds the conversation (its earlier messages); give history= only "
                           "with a question alone")
        kwargs = {**kwargs, "history": history}
    return question, kwargs
