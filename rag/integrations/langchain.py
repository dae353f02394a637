"""LangChain: a retriever over a `rag` index or a running `rag serve`, and a runnable that answers.

    from rag.integrations.langchain import RagRetriever

    retriever = RagRetriever(index="indexes/company", k=5, filters=["collection=hr"])
    retriever = RagRetriever(url="http://localhost:8000", api_key=KEY)      # or a running rag serve
    docs = retriever.invoke("How many days of annual leave?")                # list[Document]
    reply = retriever.as_answerer().invoke("How many days of annual leave?")  # dict: answer, citations, ...

Needs only langchain-core (`pip install 'rag[langchain]'`). The retriever is a plain
`BaseRetriever`, so it composes like any other (`retriever | format_docs`, `.batch`, `.ainvoke`,
callbacks and tracing); it translates to and from the Engine or the HTTP API and has no
retrieval logic of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, SecretStr

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable, RunnableLambda
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("rag.integrations.langchain needs langchain-core: pip install 'rag[langchain]'") from exc

from rag.config import Settings
from rag.engine import Engine
from rag.integrations.client import (
    DEFAULT_TIMEOUT,
    Backend,
    Generator,
    Mode,
    connect,
    hit_metadata,
    question_of,
)
from rag.records import Hit

__all__ = ["RagRetriever", "to_document"]


class RagRetriever(BaseRetriever):
    """Passages from a `rag` index as LangChain `Document`s, best first.

    Where from: `url` (and `api_key`) for a running `rag serve`; otherwise an index in this
    process: `index` (a path), `settings`, an existing `engine`, or, with none of them, the
    index `rag` is configured with. In this process, one Engine serves the retriever and its
    answerer, so models load once, on first use.

    `k`, `filters` (`rag search --filter` expressions such as "collection=hr" or
    "source=hr/*") and `mode` ("hybrid", "dense", "bm25") go to every search as given; None
    means the index's own settings. A service adds its key's filters to them.

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

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [to_document(hit) for hit in self._backend.search(query, self.k, self.filters, self.mode)]

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        return [to_document(hit) for hit in await self._backend.asearch(query, self.k, self.filters, self.mode)]

    def as_answerer(self, generator: Generator | None = None,
                    k: int | None = None) -> Runnable[str | dict[str, Any], dict[str, Any]]:
        """A runnable from a question (a string, or a dict with "question") to `rag`'s cited
        answer: the `rag ask --json` object, whose main keys are `answer` (text with `[n]`
        markers), `citations` (number, doc_id, source, title, location, quote), `abstained`
        (True when the passages do not hold the answer) and `grounded`; from a service, also
        the answer's `id` for POST /v1/feedback.

        It asks through the same index or service, with this retriever's filters; `generator`
        ("local", "openai", "extractive") and `k` (passages given to the generator) default to
        the index's or service's own settings. `rag` retrieves for itself here, so the answer
        cites exactly the passages its generator read.
        """
        backend, filters = self._backend, list(self.filters)

        def answer(question: str | dict[str, Any]) -> dict[str, Any]:
            return backend.ask(question_of(question), k, filters, generator)

        async def aanswer(question: str | dict[str, Any]) -> dict[str, Any]:
            return await backend.aask(question_of(question), k, filters, generator)

        return RunnableLambda(answer, afunc=aanswer, name="RagAnswer")

    def close(self) -> None:
        """Release the HTTP connections, or the Engine's open index (not an `engine` passed in)."""
        self._backend.close()


def to_document(hit: Hit) -> Document:
    """A LangChain Document for one passage (see RagRetriever for its metadata)."""
    return Document(page_content=hit.text, metadata=hit_metadata(hit), id=str(hit.chunk_id))
