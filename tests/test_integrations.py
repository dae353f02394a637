"""The framework adapters (rag.integrations) on real indexes and a real `rag serve`: LangChain's
retriever and answering runnable, LlamaIndex's retriever, query engine and chat engine (when
llama-index-core is installed), conversations given as each framework's messages, and the
README's examples run as written."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from conftest import REPO, write_sample_docs
from serving import FINANCE_FACT, free_port

from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from rag import Engine, RagError, Settings
from rag.conversation import Turn
from rag.integrations.client import RemoteError, base_url, conversation_of, question_of
from rag.integrations.langchain import RagRetriever

LEAVE = "How many days of annual leave does an employee get?"
REIMBURSEMENT = "What is the travel reimbursement limit per trip?"
# A follow-up that means nothing alone: after E-451's question it asks how to clear that error
# (manual.pdf, page 2); alone it matches the password-reset FAQ better.
ERROR = "What does error code E-451 mean?"
FIX = "How do I fix it?"
ERROR_CHAT = [SystemMessage("You are the robot's help desk."), HumanMessage(ERROR),
              AIMessage("E-451 means the lidar sensor is blocked."), HumanMessage(FIX)]
# The served knowledge's follow-up: after the leave question it asks how to request leave
# (leave.md); alone it matches travel.md ("Book trips through the travel portal") better.
REQUEST = "How do I request them?"
LEAVE_CHAT = [HumanMessage(LEAVE), AIMessage("Every employee gets 25 days of annual leave."), HumanMessage(REQUEST)]


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder) -> Engine:
    """The sample documents (every format) indexed once for this module, with the session's model."""
    root = tmp_path_factory.mktemp("integrations")
    engine = Engine(Settings.load(overrides={"index.path": str(root / "index")}, environ={}), embedder=embedder)
    engine.index([write_sample_docs(root / "docs")])
    yield engine
    engine.close()


def llama_index():
    """The LlamaIndex adapter, or a skip that says how to get it."""
    pytest.importorskip("llama_index.core", reason="llama-index-core is not installed (pip install 'rag[llamaindex]'); "
                                                   "the LlamaIndex adapter is an optional extra")
    import rag.integrations.llama_index as module

    return module


# -- LangChain, an index in this process ----------------------------------------------------


def test_documents_are_the_engines_hits_with_their_metadata(kb):
    retriever = RagRetriever(engine=kb, k=3)
    docs = retriever.invoke("error code E-451 lidar")
    hits = kb.search("error code E-451 lidar", 3)
    assert [d.page_content for d in docs] == [h.text for h in hits], "the same passages, in the engine's order"
    top = docs[0]
    assert top.id == str(hits[0].chunk_id)
    assert top.metadata["doc_id"] == "manual.pdf" and top.metadata["title"] == "Robot Manual"
    assert top.metadata["page"] == 2 and top.metadata["location"] == "page 2"
    assert top.metadata["collection"] == "default" and top.metadata["source"].endswith("manual.pdf")
    assert top.metadata["chunk_id"] == hits[0].chunk_id and top.metadata["score"] == hits[0].score
    assert set(top.metadata["scores"]) == {"dense", "bm25"}, "each retriever's own score travels too"
    heading = retriever.invoke("paid vacation days")[0]
    assert heading.metadata["location"] == "Handbook > Leave" and heading.metadata["headings"] == ["Handbook", "Leave"]


def test_k_filters_and_mode_go_to_the_engine_as_given(kb):
    retriever = RagRetriever(engine=kb, k=2, filters=["doc_id=faq-*"], mode="bm25")
    docs = retriever.invoke("badge password")
    hits = kb.search("badge password", 2, ["doc_id=faq-*"], "bm25")
    assert [(d.metadata["doc_id"], d.metadata["score"]) for d in docs] == [(h.doc_id, h.score) for h in hits]
    assert {d.metadata["doc_id"] for d in docs} == {"faq-1", "faq-2"}
    assert all(set(d.metadata["scores"]) == {"bm25"} for d in docs), "bm25 mode: no dense score"
    assert docs[0].metadata["category"] in {"it", "office"}, "the document's own metadata is kept"
    with pytest.raises(RagError, match="filter"):
        RagRetriever(engine=kb, filters=["no operator here"]).invoke("badge")


def test_k_filters_mode_and_history_per_call_replace_the_retrievers(kb):
    retriever = RagRetriever(engine=kb, k=3, filters=["collection=default"])
    assert len(retriever.invoke(ERROR)) == 3 and len(retriever.invoke(ERROR, k=1)) == 1
    assert len(asyncio.run(retriever.ainvoke(ERROR, k=2))) == 2
    assert [len(docs) for docs in retriever.batch([ERROR, LEAVE], k=1)] == [1, 1]
    docs = retriever.invoke("badge password", k=2, filters=["doc_id=faq-*"], mode="bm25")
    hits = kb.search("badge password", 2, ["doc_id=faq-*"], "bm25")
    assert [(d.metadata["doc_id"], d.metadata["score"]) for d in docs] == [(h.doc_id, h.score) for h in hits]
    assert len(retriever.invoke(ERROR)) == 3, "a call's options are that call's only"
    for bad, message in ((dict(k=0), "k must"), (dict(k=1001), "k must"), (dict(k="2"), "k must"),
                         (dict(top_k=2), "not top_k"), (dict(mode="fuzzy"), "mode must"),
                         (dict(filters="doc_id=faq-1"), "filters must"), (dict(history="text"), "list of messages")):
        with pytest.raises(RagError, match=message):
            retriever.invoke(ERROR, **bad)


def test_a_follow_up_in_langchain_messages_is_searched_in_context(kb):
    retriever = RagRetriever(engine=kb, k=3)
    alone = retriever.invoke(FIX)
    assert alone[0].metadata["doc_id"] != "manual.pdf", "alone, the follow-up does not find the error"
    in_context = retriever.invoke(ERROR_CHAT)
    assert in_context[0].metadata["doc_id"] == "manual.pdf" and "E-451" in in_context[0].page_content
    history = [{"role": "user", "content": ERROR},
               {"role": "assistant", "content": "E-451 means the lidar sensor is blocked."}]
    assert [d.id for d in in_context] == [str(h.chunk_id) for h in kb.search(FIX, 3, history=history)]
    same = [retriever.invoke({"question": FIX, "chat_history": ERROR_CHAT[:3]}),  # MessagesPlaceholder's shape
            retriever.invoke([("system", "Be brief."), ("human", ERROR), ("ai", "Blocked lidar."), ("human", FIX)]),
            retriever.invoke(FIX, history=ERROR_CHAT[:3]),
            asyncio.run(retriever.ainvoke(ERROR_CHAT)),
            retriever.batch([ERROR_CHAT])[0]]
    assert all([d.id for d in docs] == [d.id for d in in_context] for docs in same)
    with pytest.raises(RagError, match="already holds the conversation"):
        retriever.invoke(ERROR_CHAT, history=ERROR_CHAT[:3])
    with pytest.raises(RagError, match="no question"):
        retriever.invoke([SystemMessage("Be brief."), AIMessage("Hello!")])


def test_messages_become_the_question_and_its_history():
    turns = [{"role": "user", "content": ERROR}, {"role": "assistant", "content": "Blocked lidar."}]
    expected = (FIX, turns)
    assert conversation_of([HumanMessage(ERROR), AIMessage("Blocked lidar."), HumanMessage(FIX)]) == expected
    assert conversation_of([SystemMessage("sys"), HumanMessage(ERROR), AIMessage("Blocked lidar."),
                            AIMessage("", tool_calls=[{"name": "lookup", "args": {}, "id": "1"}]),
                            ToolMessage("tool output", tool_call_id="1"), HumanMessage(FIX)]) == expected
    assert conversation_of([ChatMessage(role="user", content=ERROR), {"role": "assistant", "content": "Blocked lidar."},
                            HumanMessage([{"type": "text", "text": FIX}])]) == expected
    assert conversation_of([Turn("user", ERROR), Turn("assistant", "Blocked lidar."), FIX]) == expected
    assert conversation_of({"input": FIX, "history": turns}) == conversation_of({"messages": turns + [("user", FIX)]})
    assert conversation_of(HumanMessage(FIX)) == conversation_of(("human", FIX)) == conversation_of(FIX) == (FIX, [])
    assert conversation_of([HumanMessage(ERROR), HumanMessage(FIX), AIMessage("late")]) == (
        FIX, [{"role": "user", "content": ERROR}]), "the last human message is the question"
    for bad, message in (([("robot", "beep")], "not a message"), ({"question": FIX, "chat_history": "Human: hi"},
                                                                  "return_messages"), (42, "no question")):
        with pytest.raises(RagError, match=message):
            conversation_of(bad)


def test_async_batch_and_sync_agree(kb):
    retriever = RagRetriever(engine=kb, k=2)
    questions = ["paid vacation", "printer floor"]
    sync = retriever.batch(questions)
    asynchronous = asyncio.run(retriever.abatch(questions))
    assert [[d.id for d in docs] for docs in sync] == [[d.id for d in docs] for docs in asynchronous]
    assert asyncio.run(retriever.ainvoke("printer floor"))[0].metadata["doc_id"] == "intranet.html"


def test_an_index_path_gets_an_engine_of_its_own(kb):
    retriever = RagRetriever(index=kb.store.path, k=1)
    try:
        assert retriever.invoke("cafeteria opening hours")[0].metadata["doc_id"] == "notes.txt"
    finally:
        retriever.close()
    missing = RagRetriever(index=kb.store.path.parent / "nowhere")
    with pytest.raises(RagError, match="nowhere"):
        missing.invoke("anything")


def test_the_answerer_returns_rags_cited_answer(kb):
    answerer = RagRetriever(engine=kb, filters=["collection=default"]).as_answerer(generator="extractive")
    reply = answerer.invoke("How many days of paid vacation do employees get?")
    assert "27 days" in reply["answer"] and re.search(r"\[\d\]", reply["answer"])
    assert reply["abstained"] is False and reply["grounded"] is True and reply["generator"] == "extractive"
    assert reply["citations"][0]["doc_id"] == "handbook.md" and reply["query"] == reply["question"]
    assert {"number", "doc_id", "source", "title", "location", "quote"} == set(reply["citations"][0])
    same = asyncio.run(answerer.ainvoke({"question": "How many days of paid vacation do employees get?"}))
    assert same["answer"] == reply["answer"]
    with pytest.raises(RagError, match="no question"):
        answerer.invoke({"query_text": "wrong key"})


def test_the_answerer_answers_a_follow_up_in_context(kb):
    answerer = RagRetriever(engine=kb).as_answerer(generator="extractive")
    alone = answerer.invoke(FIX)
    assert alone["query"] == FIX and "manual.pdf" not in {c["doc_id"] for c in alone["citations"]}
    reply = answerer.invoke(ERROR_CHAT)
    assert reply["question"] == FIX and reply["query"] != FIX and "E-451" in reply["query"]
    assert "clean the lens" in reply["answer"] and reply["citations"][0]["doc_id"] == "manual.pdf"
    later = asyncio.run(answerer.ainvoke({"question": FIX, "chat_history": ERROR_CHAT[:3]}))
    assert (later["query"], later["answer"]) == (reply["query"], reply["answer"])


def test_where_from_is_checked_before_anything_loads():
    with pytest.raises(RagError, match="not both"):
        RagRetriever(index="indexes/company", url="http://localhost:8000")
    with pytest.raises(RagError, match="api_key"):
        RagRetriever(index="indexes/company", api_key="k")
    with pytest.raises(RagError, match="http://"):
        RagRetriever(url="localhost:8000")
    with pytest.raises(ValueError):
        RagRetriever(index="indexes/company", mode="fuzzy")
    assert base_url("http://h:1/v1/") == base_url("http://h:1") == "http://h:1"
    assert question_of({"question": "q"}) == question_of("q") == "q"
    secret = "rag_secret_token_123"
    assert secret not in repr(RagRetriever(url="http://127.0.0.1:9", api_key=secret))


def test_an_unreachable_service_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    retriever = RagRetriever(url=url, api_key="rag_unused_key", timeout=5)
    for call in (lambda: retriever.invoke("q"), lambda: asyncio.run(retriever.ainvoke("q"))):
        with pytest.raises(RemoteError) as error:
            call()
        assert url in str(error.value) and "rag serve" in str(error.value) and error.value.status == 0
        assert "rag_unused_key" not in str(error.value)


# -- LangChain, a running rag serve ---------------------------------------------------------


@pytest.mark.slow
def test_a_served_index_gives_the_same_documents(served):
    retriever = RagRetriever(url=served.base, api_key=served.tokens["reader"], k=2)
    docs = retriever.invoke(LEAVE)
    top = docs[0]
    assert "25 days" in top.page_content and top.metadata["doc_id"] == "leave.md"
    assert top.metadata["collection"] == "hr" and top.metadata["location"] == "Leave"
    assert isinstance(top.metadata["chunk_id"], int) and top.id == str(top.metadata["chunk_id"])
    assert [d.id for d in asyncio.run(retriever.ainvoke(LEAVE))] == [d.id for d in docs]
    only_finance = RagRetriever(url=served.base + "/v1", api_key=served.tokens["reader"],  # OpenAI-style URL too
                                filters=["collection=finance"])
    assert {d.metadata["collection"] for d in only_finance.invoke(LEAVE)} == {"finance"}


@pytest.mark.slow
def test_a_served_retriever_takes_k_and_history_per_call(served):
    retriever = RagRetriever(url=served.base, api_key=served.tokens["hr"], k=2)
    assert len(retriever.invoke(LEAVE)) == 2 and len(retriever.invoke(LEAVE, k=1)) == 1
    assert len(asyncio.run(retriever.ainvoke(LEAVE, k=1))) == 1
    assert retriever.invoke(REQUEST)[0].metadata["doc_id"] != "leave.md", "alone, it is not about leave"
    for docs in (retriever.invoke(LEAVE_CHAT), asyncio.run(retriever.ainvoke(LEAVE_CHAT)),
                 retriever.invoke({"question": REQUEST, "chat_history": LEAVE_CHAT[:2]})):
        assert docs[0].metadata["doc_id"] == "leave.md"
    long_chat = LEAVE_CHAT[:2] * 150  # more turns than the service takes: the most recent are sent
    assert retriever.invoke(REQUEST, history=long_chat)[0].metadata["doc_id"] == "leave.md"
    with pytest.raises(RagError, match="k must"):
        retriever.invoke(LEAVE, k=0)  # checked here, before the request
    reply = retriever.as_answerer(generator="extractive").invoke(LEAVE_CHAT)
    assert reply["question"] == REQUEST and "annual leave" in reply["query"]
    assert reply["citations"][0]["doc_id"] == "leave.md" and reply["id"]


@pytest.mark.slow
def test_the_hr_keys_retriever_never_receives_finance(served):
    for filters in ([], ["collection=finance"]):
        retriever = RagRetriever(url=served.base, api_key=served.tokens["hr"], k=10, filters=filters)
        for docs in (retriever.invoke(REIMBURSEMENT), asyncio.run(retriever.ainvoke(REIMBURSEMENT))):
            assert all(FINANCE_FACT not in d.page_content and d.metadata["collection"] == "hr" for d in docs)
        reply = retriever.as_answerer(generator="extractive").invoke(REIMBURSEMENT)
        assert FINANCE_FACT not in str(reply)
    reader = RagRetriever(url=served.base, api_key=served.tokens["reader"], k=10)
    assert any(FINANCE_FACT in d.page_content for d in reader.invoke(REIMBURSEMENT)), "the fact is there to leak"


@pytest.mark.slow
def test_a_served_answer_keeps_its_citations_and_id(served):
    answerer = RagRetriever(url=served.base, api_key=served.tokens["reader"]).as_answerer(generator="extractive")
    reply = answerer.invoke({"question": LEAVE})
    assert "25 days" in reply["answer"] and reply["citations"][0]["doc_id"] == "leave.md"
    assert reply["id"] and reply["abstained"] is False
    assert asyncio.run(answerer.ainvoke(LEAVE))["answer"] == reply["answer"]


@pytest.mark.slow
def test_a_wrong_key_is_a_clear_error_without_the_key(served):
    wrong = "rag_this_is_not_a_key"
    retriever = RagRetriever(url=served.base, api_key=wrong)
    calls = (lambda: retriever.invoke(LEAVE), lambda: asyncio.run(retriever.ainvoke(LEAVE)),
             lambda: retriever.as_answerer().invoke(LEAVE))
    for call in calls:
        with pytest.raises(RemoteError) as error:
            call()
        message = str(error.value)
        assert error.value.status == 401 and "401" in message and served.base in message
        assert "api_key" in message and wrong not in message
    with pytest.raises(RemoteError, match="422"):  # the service's own validation, passed on
        RagRetriever(url=served.base, api_key=served.tokens["reader"], filters=["x"] * 40).invoke(LEAVE)


# -- LlamaIndex -----------------------------------------------------------------------------


def test_llama_index_nodes_are_the_engines_hits(kb):
    module = llama_index()
    retriever = module.RagRetriever(engine=kb, k=3)
    nodes = retriever.retrieve("error code E-451 lidar")
    hits = kb.search("error code E-451 lidar", 3)
    assert [(n.node.node_id, n.score) for n in nodes] == [(str(h.chunk_id), h.score) for h in hits]
    top = nodes[0].node
    assert top.get_content() == hits[0].text and top.ref_doc_id == "manual.pdf"
    assert top.metadata["location"] == "page 2" and top.metadata["scores"]
    for_model = top.get_content(metadata_mode="llm")
    assert "Robot Manual" in for_model and "page 2" in for_model and "chunk_id" not in for_model
    later = asyncio.run(retriever.aretrieve("error code E-451 lidar"))
    assert [n.node.node_id for n in later] == [n.node.node_id for n in nodes]
    bm25 = module.RagRetriever(engine=kb, k=2, filters=["doc_id=faq-*"], mode="bm25").retrieve("badge")
    assert {n.node.metadata["doc_id"] for n in bm25} <= {"faq-1", "faq-2"}
    with pytest.raises(RagError, match="mode"):
        module.RagRetriever(engine=kb, mode="fuzzy")


def test_llama_index_query_engine_answers_with_citations(kb):
    module = llama_index()
    engine = module.RagRetriever(engine=kb).as_query_engine(generator="extractive")
    response = engine.query("How many days of paid vacation do employees get?")
    assert "27 days" in response.response and str(response) == response.response
    assert response.metadata["citations"][0]["doc_id"] == "handbook.md" and response.metadata["abstained"] is False
    cited = [n for n in response.source_nodes if n.node.metadata["cited"]]
    assert cited and cited[0].node.metadata["number"] == response.metadata["citations"][0]["number"]
    later = asyncio.run(engine.aquery("How many days of paid vacation do employees get?"))
    assert later.response == response.response


def test_llama_index_chat_engine_remembers_the_conversation(kb):
    module = llama_index()
    from llama_index.core.llms import ChatMessage as LlamaMessage

    chat = module.RagRetriever(engine=kb, filters=["collection=default"]).as_chat_engine(generator="extractive")
    first = chat.chat(ERROR)
    assert "lidar" in first.response and first.metadata["query"] == ERROR
    second = chat.chat(FIX)
    assert second.metadata["query"] != FIX and "E-451" in second.metadata["query"], "the follow-up, understood"
    cited = [n.node.metadata["doc_id"] for n in second.source_nodes if n.node.metadata["cited"]]
    assert cited[0] == "manual.pdf" and "clean the lens" in str(second)
    assert [(m.role.value, m.content) for m in chat.chat_history] == [
        ("user", ERROR), ("assistant", first.response), ("user", FIX), ("assistant", second.response)]
    chat.reset()
    assert chat.chat_history == []
    forgotten = chat.chat(FIX)
    assert forgotten.metadata["query"] == FIX
    assert "manual.pdf" not in {c["doc_id"] for c in forgotten.metadata["citations"]}
    given = chat.chat(FIX, chat_history=[LlamaMessage(role="system", content="Be brief."),
                                         LlamaMessage(role="user", content=ERROR)])  # replaces the memory
    assert given.metadata["query"] == second.metadata["query"] and len(chat.chat_history) == 4
    streamed = chat.stream_chat(ERROR, chat_history=[])
    assert list(streamed.response_gen) == [first.response], "the whole answer, in one piece"
    assert streamed.source_nodes and len(chat.chat_history) == 2


def test_llama_index_chat_engine_async(kb):
    module = llama_index()
    chat = module.RagRetriever(engine=kb).as_chat_engine(generator="extractive")

    async def converse() -> tuple[str, list[str]]:
        await chat.achat(ERROR)
        streamed = await chat.astream_chat(FIX)
        pieces = [piece async for piece in streamed.async_response_gen()]
        return streamed.source_nodes[0].node.metadata["doc_id"], pieces

    top, pieces = asyncio.run(converse())
    assert top == "manual.pdf" and len(pieces) == 1 and "clean the lens" in pieces[0]
    assert len(chat.chat_history) == 4 and chat.chat_history[-1].content == pieces[0]


@pytest.mark.slow
def test_llama_index_chat_engine_over_a_service(served):
    module = llama_index()
    chat = module.RagRetriever(url=served.base, api_key=served.tokens["hr"]).as_chat_engine(generator="extractive")
    assert "25 days" in chat.chat(LEAVE).response
    follow_up = chat.chat(REQUEST)
    assert "annual leave" in follow_up.metadata["query"] and follow_up.metadata["id"]
    assert follow_up.source_nodes[0].node.metadata["doc_id"] == "leave.md"
    chat.reset()
    assert chat.chat(REQUEST).metadata["query"] == REQUEST


@pytest.mark.slow
def test_llama_index_hr_key_never_receives_finance(served):
    module = llama_index()
    retriever = module.RagRetriever(url=served.base, api_key=served.tokens["hr"], k=10)
    for nodes in (retriever.retrieve(REIMBURSEMENT), asyncio.run(retriever.aretrieve(REIMBURSEMENT))):
        assert nodes and all(FINANCE_FACT not in n.node.get_content() for n in nodes)
    response = retriever.as_query_engine(generator="extractive").query(REIMBURSEMENT)
    assert FINANCE_FACT not in response.response and FINANCE_FACT not in str(response.metadata)
    assert all(FINANCE_FACT not in n.node.get_content() for n in response.source_nodes)
    with pytest.raises(RemoteError, match="401"):
        module.RagRetriever(url=served.base, api_key="rag_wrong").retrieve(LEAVE)


# -- the README's examples ------------------------------------------------------------------

SECTION = "## Using it from LangChain / LlamaIndex / an OpenAI client"


def readme_examples() -> list[str]:
    """The ```python blocks of the README's integrations section, in order; the first one says
    where the index and the service are."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"the README has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)


def test_the_readme_has_its_examples():
    blocks = readme_examples()
    assert len(blocks) == 5 and "RAG_SERVICE_KEY" in blocks[0]
    assert "langchain" in blocks[1] and "llama_index" in blocks[3] and "OpenAI(" in blocks[4]


@pytest.mark.slow
@pytest.mark.parametrize("number", [1, 2, 3, 4], ids=["langchain", "langchain-remote", "llamaindex", "openai"])
def test_a_readme_example_runs_as_written(number, served, monkeypatch, capsys):
    blocks = readme_examples()
    if "llama_index" in blocks[number]:
        llama_index()
    monkeypatch.setenv("RAG_INDEX_PATH", str(served.index))
    monkeypatch.setenv("RAG_SERVICE_URL", served.base)
    monkeypatch.setenv("RAG_SERVICE_KEY", served.tokens["reader"])
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md (where from)", "exec"), namespace)
    exec(compile(blocks[number], f"README.md (example {number})", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.strip(), "the example printed nothing"
    if number in (1, 3):
        assert "25 days" in printed and "leave.md" in printed
    if number == 2:
        assert "('hr', 'leave.md')" in printed
    if number == 4:
        reply = namespace["reply"]
        assert reply.choices[0].message.content and isinstance(reply.model_extra["citations"], list)
