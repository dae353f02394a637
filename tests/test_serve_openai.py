"""The OpenAI-compatible routes of a real `rag serve`, called with the official `openai` client as
chat front ends call them: models, cited answers (plain and streamed) whose sources survive as
`citations`, a key limited to HR never receiving finance's passage, and errors the client
raises with a readable message."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest
from serving import FINANCE_FACT

from rag import Settings
from rag.serve.routes.openai_compat import offered_models

pytestmark = pytest.mark.slow

LEAVE = "How many days of annual leave does an employee get?"
REIMBURSEMENT = "What is the travel reimbursement limit per trip?"


def client(served, key: str = "reader", token: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base + "/v1", api_key=token or served.tokens[key], max_retries=0,
                         timeout=120)


def ask(served, question: str, model: str = "rag-extractive", key: str = "reader", **kwargs):
    return client(served, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], **kwargs)


def markers(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"\[(\d+)\]", text)}


def test_models_lists_rag_and_one_model_per_generator_it_can_run(served):
    rag = client(served)
    assert {m.id for m in rag.models.list()} == {"rag", "rag-extractive", "rag-local"}, \
        "rag-openai is listed only when an OpenAI-compatible server is configured"
    assert rag.models.retrieve("rag-extractive").owned_by == "rag"
    for call in (lambda: rag.models.retrieve("gpt-4o"), lambda: ask(served, LEAVE, model="rag-openai")):
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert missing.value.code == "model_not_found" and "GET /v1/models" in missing.value.message


def test_an_answer_keeps_its_markers_and_carries_its_citations(served):
    response = ask(served, LEAVE, temperature=0.2, max_tokens=50, top_p=1, user="someone", n=1)
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == "rag-extractive"
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert "25 days" in choice.message.content and markers(choice.message.content)
    citations = response.model_extra["citations"]
    assert {c["number"] for c in citations} == markers(choice.message.content)
    assert "leave.md" in {c["doc_id"] for c in citations}
    assert set(citations[0]) == {"number", "doc_id", "source", "title", "location", "quote"}
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens

    # The id names the answer for feedback.
    assert response.id.startswith("chatcmpl-")
    rated = httpx.post(f"{served.base}/v1/feedback", headers=served.auth("reader"),
                       json={"answer_id": response.id.removeprefix("chatcmpl-"), "rating": "up"})
    assert rated.status_code == 200, rated.text


def test_streamed_chunks_add_up_to_the_answer_and_the_last_one_carries_the_citations(served):
    whole = ask(served, LEAVE).choices[0].message.content
    # A conversation: the last user message is the question, given as content parts.
    chunks = list(client(served).chat.completions.create(model="rag-extractive", stream=True, messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi! Ask me about the company."},
        {"role": "user", "content": [{"type": "text", "text": LEAVE}]},
    ]))
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and last.id.startswith("chatcmpl-")
    assert {c.id for c in chunks} == {last.id}, "every chunk carries the completion's id"
    assert {c["number"] for c in last.model_extra["citations"]} == markers(text)
    assert all("citations" not in (c.model_extra or {}) for c in chunks[:-1]), "sources come once, at the end"
    rated = httpx.post(f"{served.base}/v1/feedback", headers=served.auth("reader"),
                       json={"answer_id": last.id.removeprefix("chatcmpl-"), "rating": "down"})
    assert rated.status_code == 200, "the completion's id names the answer for feedback: " + rated.text

    with_usage = list(ask(served, LEAVE, stream=True, stream_options={"include_usage": True}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens >= 0
    assert with_usage[-1].model_extra["citations"] == last.model_extra["citations"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_key_limited_to_hr_never_receives_the_finance_passage(served, stream):
    response = ask(served, REIMBURSEMENT, key="hr", stream=stream)
    objects = list(response) if stream else [response]
    seen = json.dumps([o.model_dump() for o in objects])
    # (not "640" alone: a random completion id may hold those digits)
    assert FINANCE_FACT not in seen and "limits.md" not in seen and "640 EUR" not in seen
    final = objects[-1]
    assert {c["doc_id"] for c in final.model_extra["citations"]} <= {"leave.md", "travel.md"}


def test_errors_are_raised_by_the_client_with_a_clear_message(served):
    with pytest.raises(openai.AuthenticationError) as refused:
        client(served, token="not-a-key").models.list()
    assert refused.value.code == "invalid_api_key" and "valid API key" in refused.value.message

    rag = client(served)
    with pytest.raises(openai.BadRequestError) as no_question:
        rag.chat.completions.create(model="rag-extractive", messages=[
            {"role": "system", "content": "Answer briefly."}, {"role": "assistant", "content": "Sure."}])
    assert "no user message" in no_question.value.message

    for kwargs, said in (({"n": 2}, "n must be 1"),
                         ({"extra_body": {"filterz": ["collection=hr"]}}, "filterz"),
                         ({"response_format": {"type": "json_object"}}, "only the text response format")):
        with pytest.raises(openai.BadRequestError) as invalid:
            ask(served, LEAVE, **kwargs)
        assert said in invalid.value.message and invalid.value.type == "invalid_request_error"

    with pytest.raises(openai.BadRequestError) as image:
        rag.chat.completions.create(model="rag", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert "only text content" in image.value.message


def test_the_local_model_streams_its_answer_token_by_token(served):
    chunks = list(ask(served, "How many days of annual leave?", model="rag-local", stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2, pieces
    assert chunks[-1].choices[0].finish_reason == "stop" and "citations" in chunks[-1].model_extra


def test_only_the_generators_the_server_offers_are_models():
    configured = Settings.load(overrides={"generate.openai_base_url": "http://localhost:8000/v1",
                                          "generate.openai_model": "qwen",
                                          "serve.generators": ["openai", "extractive"]}, environ={})
    assert offered_models(configured) == {"rag": None, "rag-local": "local", "rag-openai": "openai",
                                          "rag-extractive": "extractive"}
    assert offered_models(Settings.load(environ={})) == {"rag": None, "rag-local": "local",
                                                         "rag-extractive": "extractive"}
    extractive_only = Settings.load(overrides={"answer.generator": "extractive"}, environ={})
    assert offered_models(extractive_only) == {"rag": None, "rag-extractive": "extractive"}
