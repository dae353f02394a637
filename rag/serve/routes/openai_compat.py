"""POST /v1/chat/completions and GET /v1/models in OpenAI's format, so that chat front ends and
SDKs that speak OpenAI (the official clients, Open WebUI, LibreChat, LangChain) can use the
knowledge base as a model without a line of code of their own.

Only the last user message is asked: `rag` answers one question from the passages, so earlier
turns, system prompts and the sampling parameters a client sends (temperature, max_tokens,
top_p, stop, seed, user, tools, ...) are accepted and ignored. Sources would be lost in the
plain OpenAI shape, so the answer text keeps its `[n]` markers and the response carries one
extra top-level field, `citations`: the validated citations of /v1/ask (number, doc_id,
source, title, location, quote). Errors use OpenAI's body, `{"error": {"message", "type",
"param", "code"}}`, because OpenAI clients show only that message to their users.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.answer import Answer
from rag.config import Settings
from rag.errors import RagError
from rag.serve.keys import ApiKey
from rag.serve.schemas import STREAMED
from rag.serve.service import Service, access, http_error, key_filters, new_answer_id, offered_generators

CHAT_DOC = """The last user message is the question (a string, or content parts of type `text`);
the model picks the generator: `rag` (the server's configured one), `rag-extractive`,
`rag-local` or `rag-openai` (GET /v1/models lists those this server offers).

The answer keeps its `[n]` markers, and the response has one extra top-level field,
`citations`: the validated citations (number, doc_id, source, title, location, quote) whose
`number` is the `n` of a marker. The id is `chatcmpl-<answer id>`; POST /v1/feedback takes the
part after `chatcmpl-`.

With `stream: true`: Server-Sent Events `data: {chat.completion.chunk}`, ending with
`data: [DONE]`. The first chunk has the role, the next ones pieces of text, and the last chunk
before `[DONE]` carries `citations` and `usage`; every chunk has the completion's id. Text the engine
corrects after streaming (an invalid citation number removed) stays as streamed; `citations`
lists only valid ones. A failure midway is one `data: {"error": {...}}` event.

Accepted and ignored: temperature, top_p, max_tokens, stop, seed, user, tools and the other
sampling and metadata parameters of OpenAI's API. Only `n: 1` and a `text` response format
are possible."""

# Every model name starts with this; `rag` alone is the configured generator.
MODEL_PREFIX = "rag"


# -- request --------------------------------------------------------------------------------


class ContentPart(BaseModel):
    """One part of a message's content; only text parts can be asked about."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """A message of the conversation. Lenient about the fields OpenAI messages may carry (name,
    tool_calls, refusal, ...): only the last user message's text is read."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request. Strict about unknown top-level fields, like the other
    /v1 routes (a misspelt parameter is an error, not silently dropped), but every parameter of
    OpenAI's API is accepted, so its clients work unchanged."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(default=1, description="only 1: the knowledge base gives one answer")
    response_format: dict[str, Any] | None = Field(default=None, description="only {\"type\": \"text\"}")
    # Accepted and ignored: the engine's own settings decide generation.
    temperature: Any = None
    top_p: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    stop: Any = None
    seed: Any = None
    user: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logit_bias: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None
    function_call: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    prompt_cache_key: Any = None
    safety_identifier: Any = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("n must be 1: the knowledge base gives one answer per question")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError("only the text response format is possible: answers are cited text")
        return value


def question_of(messages: list[ChatMessage]) -> str:
    """The last user message's text: the question. A 400 when there is none, or when it holds
    something other than text (an image cannot be looked up)."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        content = message.content
        if isinstance(content, list):
            kinds = {part.type for part in content} - {"text"}
            if kinds:
                raise HTTPException(400, f"only text content can be asked about, not {', '.join(sorted(kinds))}")
            content = "\n".join(part.text or "" for part in content)
        if not content or not content.strip():
            raise HTTPException(400, "the last user message has no text to ask about")
        return content
    raise HTTPException(400, "the conversation has no user message: the last one is the question")


# -- models ---------------------------------------------------------------------------------


def offered_models(settings: Settings) -> dict[str, str | None]:
    """Model name -> generator: `rag` (answer.generator) and `rag-NAME` for each generator the
    server offers (serve.generators); no other can be chosen, so no request loads a model."""
    return {MODEL_PREFIX: None, **{f"{MODEL_PREFIX}-{name}": name for name in offered_generators(settings)}}


class OpenAIHTTPError(HTTPException):
    """An HTTP error with OpenAI's machine-readable `code`, which some clients branch on."""

    def __init__(self, status_code: int, detail: str, code: str) -> None:
        super().__init__(status_code, detail)
        self.code = code


def _model_not_found(model: str) -> OpenAIHTTPError:
    return OpenAIHTTPError(404, f"the model {model!r} does not exist on this server; GET /v1/models lists "
                                "those it offers", "model_not_found")


# -- errors in OpenAI's shape ---------------------------------------------------------------


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error body, which its clients raise as exceptions carrying `message`."""

    error: OpenAIErrorBody


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError} for status in (400, 401, 403, 404, 408, 413, 422, 429, 503, 504)}

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}
_CODES = {401: "invalid_api_key", 503: "service_unavailable", 504: "timeout"}


def openai_error(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body: its clients raise exceptions carrying this message."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code or _CODES.get(status)}}


def _from_http(exc: StarletteHTTPException) -> JSONResponse:
    code = exc.code if isinstance(exc, OpenAIHTTPError) else None
    return JSONResponse(openai_error(exc.status_code, str(exc.detail), code), exc.status_code, exc.headers)


def _from_validation(exc: RequestValidationError) -> JSONResponse:
    # As the app's handler: the messages and locations, never the input (it may hold secrets).
    errors = exc.errors()[:5]
    where = [".".join(str(part) for part in e.get("loc", ())[1:]) for e in errors]
    message = "; ".join(f"{loc or 'body'}: {e.get('msg', '')}" for loc, e in zip(where, errors))
    return JSONResponse(openai_error(400, message or "invalid request", param=where[0] if where else None), 400)


class OpenAIErrorRoute(APIRoute):
    """Routes whose HTTP errors, access refusals and invalid bodies included, are answered in
    OpenAI's shape; FastAPI's `{"detail"}` would reach an OpenAI client's user as a bare dict."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except StarletteHTTPException as exc:  # FastAPI's own (a body it cannot decode) are Starlette's
                return _from_http(exc)
            except RequestValidationError as exc:
                return _from_validation(exc)
        return handler


# -- routes ---------------------------------------------------------------------------------


def router(service: Service) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIErrorRoute, responses=_ERROR_RESPONSES)
    read = Depends(access(service, "read"))
    started = int(time.time())

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": MODEL_PREFIX}

    @api.get("/models")
    def models(key: ApiKey | None = read) -> dict[str, Any]:
        """The models an OpenAI client may pick, one per generator this server can run."""
        return {"object": "list", "data": [model_card(name) for name in offered_models(service.settings)]}

    @api.get("/models/{model}")
    def model(model: str, key: ApiKey | None = read) -> dict[str, Any]:
        """One model, for clients that check theirs exists before using it."""
        if model not in offered_models(service.settings):
            raise _model_not_found(model)
        return model_card(model)

    @api.post("/chat/completions", description=CHAT_DOC, responses=STREAMED)
    async def chat_completions(body: ChatCompletionRequest, request: Request, key: ApiKey | None = read) -> Any:
        models = offered_models(service.settings)
        if body.model not in models:
            raise _model_not_found(body.model)
        question = question_of(body.messages)
        generator = models[body.model]
        filters = key_filters(key)
        reply = _Reply(body.model)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return await _stream(service, question, generator, filters, key, request, reply, include_usage)
        try:
            answer = await service.ask(question, None, generator, filters)
        except RagError as exc:
            raise http_error(exc) from None
        answer_id = await service.record(request, answer, key)
        return JSONResponse(reply.completion(answer_id, answer))

    return api


class _Reply:
    """The parts every object of one completion shares: model name and creation time."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.created = int(time.time())

    def completion(self, answer_id: str, answer: Answer) -> dict[str, Any]:
        message = {"role": "assistant", "content": answer.answer, "refusal": None}
        return {"id": f"chatcmpl-{answer_id}", "object": "chat.completion", "created": self.created,
                "model": self.model, "system_fingerprint": None,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                "usage": usage(answer), "citations": citations(answer)}

    def chunk(self, completion_id: str, delta: dict[str, Any] | None, finish: str | None = None,
              **extra: Any) -> ServerSentEvent:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None, "choices": choices, **extra}
        return ServerSentEvent(data=json.dumps(data, ensure_ascii=False))


def usage(answer: Answer) -> dict[str, int]:
    prompt, completion = answer.tokens.get("prompt", 0), answer.tokens.get("completion", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def citations(answer: Answer) -> list[dict[str, Any]]:
    return [asdict(c) for c in answer.citations]


async def _stream(service: Service, question: str, generator: str | None, filters: list[str],
                  key: ApiKey | None, request: Request, reply: _Reply, include_usage: bool) -> EventSourceResponse:
    items = service.ask_stream(question, None, generator, filters)
    try:  # errors before the first item (a bad filter, a full queue) are plain HTTP errors
        first = await anext(items)
    except RagError as exc:
        raise http_error(exc) from None
    answer_id = new_answer_id()  # chosen now, so that every chunk carries the id feedback takes
    completion_id = f"chatcmpl-{answer_id}"

    async def events() -> AsyncIterator[ServerSentEvent]:
        yield reply.chunk(completion_id, {"role": "assistant", "content": ""})
        streamed: list[str] = []
        item: Any = first
        try:
            while True:
                if isinstance(item, str) and item:  # the passages (a list) are not part of OpenAI's stream
                    streamed.append(item)
                    yield reply.chunk(completion_id, {"content": item})
                elif isinstance(item, Answer):
                    await service.record(request, item, key, answer_id)
                    for event in _finish(item, completion_id, "".join(streamed), reply, include_usage):
                        yield event
                item = await anext(items)
        except StopAsyncIteration:
            return
        except (RagError, HTTPException) as exc:  # a failure midway, or serve.timeout
            if isinstance(exc, RagError):
                exc = http_error(exc)
            yield ServerSentEvent(data=json.dumps(openai_error(exc.status_code, str(exc.detail)), ensure_ascii=False))
        finally:
            await items.aclose()

    return EventSourceResponse(events(), ping=15)


def _finish(answer: Answer, completion_id: str, streamed: str, reply: _Reply,
            include_usage: bool) -> list[ServerSentEvent]:
    """The stream's last chunks: text the stream did not carry (the "I don't know" sentence
    when nothing was generated), the stop, and on the very last chunk `citations` and `usage`."""
    events = []
    if answer.answer.startswith(streamed) and answer.answer != streamed:
        events.append(reply.chunk(completion_id, {"content": answer.answer[len(streamed):]}))
    final = {"citations": citations(answer), "usage": usage(answer)}
    if include_usage:  # OpenAI's usage chunk, with no choices, is then the last one
        events.append(reply.chunk(completion_id, {}, "stop"))
        events.append(reply.chunk(completion_id, None, **final))
    else:
        events.append(reply.chunk(completion_id, {}, "stop", **final))
    events.append(ServerSentEvent(data="[DONE]"))
    return events
