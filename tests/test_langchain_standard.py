"""LangChain's own standard tests for retrievers (langchain-tests' RetrieversIntegrationTests),
run against RagRetriever over a real index in this process and over a real `rag serve`: the
contract every LangChain retriever keeps (Documents back, sync and async, `k` in the
constructor and per call)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import write_sample_docs

from rag import Engine, Settings
from rag.integrations.langchain import RagRetriever

standard = pytest.importorskip("langchain_tests.integration_tests",
                               reason="langchain-tests is not installed (it is one of the dev dependencies)")

# The suite's async test (test_ainvoke_returns_documents) is a plain `async def`: LangChain's own
# packages run it with pytest-asyncio in auto mode, which this project does not set, so the mark
# goes on this module. pytest-asyncio warns about the mark on the suite's sync tests; that
# warning says nothing about them.
pytestmark = [pytest.mark.asyncio,
              pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async function")]


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory, embedder) -> Engine:
    """The sample documents (every format: dozens of passages) indexed once for this module."""
    root = tmp_path_factory.mktemp("langchain-standard")
    engine = Engine(Settings.load(overrides={"index.path": str(root / "index")}, environ={}), embedder=embedder)
    engine.index([write_sample_docs(root / "docs")])
    yield engine
    engine.close()


class TestRagRetrieverInProcess(standard.RetrieversIntegrationTests):
    """An index in this process, through an Engine the tests share (one model load)."""

    @pytest.fixture(autouse=True)
    def _engine(self, sample_index: Engine) -> None:
        self.engine = sample_index

    @property
    def retriever_constructor(self) -> type[RagRetriever]:
        return RagRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"engine": self.engine}

    @property
    def retriever_query_example(self) -> str:
        return "What does error code E-451 mean?"


@pytest.mark.slow
class TestRagRetrieverServed(standard.RetrieversIntegrationTests):
    """A running `rag serve` on 127.0.0.1 (the session's, tests/conftest.py `served`: three
    passages in collections hr and finance), through its HTTP API with a read key."""

    @pytest.fixture(autouse=True)
    def _server(self, served) -> None:
        self.server = served

    @property
    def retriever_constructor(self) -> type[RagRetriever]:
        return RagRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"url": self.server.base, "api_key": self.server.tokens["reader"], "timeout": 60}

    @property
    def retriever_query_example(self) -> str:
        return "How many days of annual leave does an employee get?"
