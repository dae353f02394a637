"""Adapters that let other frameworks use `rag` as their retriever or answerer.

- `rag.integrations.langchain`: `RagRetriever`, a LangChain retriever, and its answering
  runnable (`pip install 'rag[langchain]'`).
- `rag.integrations.llama_index`: `RagRetriever` and `RagQueryEngine` for LlamaIndex
  (`pip install 'rag[llamaindex]'`).
- `rag.integrations.client`: what both share: an index in this process or a running
  `rag serve`, behind the same four calls.

Nothing here is imported by `rag` itself, so neither framework is needed to use `rag`.
"""
