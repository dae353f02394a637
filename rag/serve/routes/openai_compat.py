"""POST /v1/chat/completions and GET /v1/models in OpenAI's format, so that chat front ends and
SDKs that speak OpenAI (the official clients, Open WebUI, LibreChat, LangChain) can use the
knowledge base as a model without a line of code of their own.

The last user message is the question and the user and assistant messages before it are the
conversation: a follow-up ("and in Shanghai?") is searched as a standalone question (`query`)
and answered in context. System and developer messages are accepted and ignored: rag's own
instructions (quote the passages, cite them, say "I don't know") are not the client's to
replace, and they are not searched either. Tool messages and the sampling parameters a client
sends (temperature, max_tokens, top_p, stop, seed, user, tools, ...) are ignored too. Sources would be lost in the
plain OpenAI shape, so the answer text keeps its `[n]` markers and the response carries one
extra top-level field, `citations`: the validated citations of /v1/ask (number, doc_id,
source, title, location, quote). Errors use OpenAI's body, `{"error": {"message", "type",
"param", "code"}}`, because OpenAI clients show only that message to their users.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.citations import Answer
from rag.conversation import Turn
from rag.config import Settings
from rag.errors import RagError
from rag.serve.callers import Caller
from rag.serve.deps import ReadCaller, ServiceDep, record_answer
from rag.serve.handlers import http_error
from rag.serve.openai_schemas import (OPENAI_ERROR_RESPONSES, AssistantMessage, ChatCompletion, ChatCompletionRequest,
                                      ChatMessage, Choice, ModelCard, ModelList, Usage, openai_error)
from rag.serve.schemas import STREAMED, CitationBody
from rag.serve.service import Service, new_answer_id, offered_generators

CHAT_DOC = """The last user message is the question (a string, or content parts of type `text`);
the model picks the generator: `rag` (the server's configured one), `rag-extractive`,
`rag-local` or `rag-openai` (GET /v1/models lists those this server offers).

The user and assistant messages before it are the conversation: a follow-up is searched as a
standalone question and answered in context. System and developer messages are ignored (rag's
own instructions stand).

The answer keeps its `[n]` markers, and the response has two extra top-level fields,
`citations`: the validated citations (number, doc_id, source, title, location, quote) whose
`number` is the `n` of a marker, and `query`: what was searched. The id is `chatcmpl-<answer id>`; POST /v1/feedback takes the
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


def question_of(messages: list[ChatMessage]) -> str:
    """The last user message's text: the question. A 400 when there is none, or when it holds
    something other than text (an image cannot be looked up)."""
    return conversation_of(messages)[0]


def conversation_of(messages: list[ChatMessage]) -> tuple[str, list[Turn]]:
    """The question (the last user message's text) and the user and assistant turns before it,
    oldest first (rag.conversation.recent drops an answer's citation markers). System, developer
    and tool messages are not part of it."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    if last is None:
        raise HTTPException(400, "the conversation has no user message: the last one is the question")
    question = _text(messages[last], strict=True)
    if not question.strip():
        raise HTTPException(400, "the last user message has no text to ask about")
    history = [Turn(m.role, _text(m)) for m in messages[:last] if m.role in ("user", "assistant")]  # type: ignore[arg-type]
    return question, [t for t in history if t.content.strip()]


def _text(message: ChatMessage, strict: bool = False) -> str:
    content = message.content
    if isinstance(content, list):
        kinds = {part.type for part in content} - {"text"}
        if kinds and strict:
            raise HTTPException(400, f"only text content can be asked about, not {', '.join(sorted(kinds))}")
        return "\n".join(part.text or "" for part in content if part.type == "text")
    return content or ""


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


def _from_http(exc: StarletteHTTPException) -> JSONResponse:
    code = exc.code if isinstance(exc, OpenAIHTTPError) else None
    return JSONResponse(openai_error(exc.status_code, str(exc.detail), code).model_dump(), exc.status_code, exc.headers)


def _from_validation(exc: RequestValidationError) -> JSONResponse:
    # As the app's handler: the messages and locations, never the input (it may hold secrets).
    errors = exc.errors()[:5]
    where = [".".join(str(part) for part in e.get("loc", ())[1:]) for e in errors]
    message = "; ".join(f"{loc or 'body'}: {e.get('msg', '')}" for loc, e in zip(where, errors))
    error = openai_error(400, message or "invalid request", param=where[0] if where else None)
    return JSONResponse(error.model_dump(), 400)


class OpenAIErrorRoute(APIRoute):
    """Routes whose errors, access refusals, invalid bodies and RagErrors included, are answered
    in OpenAI's shape, with the status and headers the app's handlers would give them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except StarletteHTTPException as exc:  # FastAPI's own (a body it cannot decode) are Starlette's
                return _from_http(exc)
            except RequestValidationError as exc:
                return _from_validation(exc)
            except RagError as exc:
                return _from_http(http_error(exc))
        return handler


# -- routes ---------------------------------------------------------------------------------

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIErrorRoute, responses=OPENAI_ERROR_RESPONSES)


def model_card(name: str, created: int) -> ModelCard:
    return ModelCard(id=name, created=created, owned_by=MODEL_PREFIX)


@router.get("/models")
def models(service: ServiceDep, caller: ReadCaller) -> ModelList:
    """The models an OpenAI client may pick, one per generator this server can run."""
    return ModelList(data=[model_card(name, service.started) for name in offered_models(service.settings)])


@router.get("/models/{model}")
def model(model: str, service: ServiceDep, caller: ReadCaller) -> ModelCard:
    """One model, for clients that check theirs exists before using it."""
    if model not in offered_models(service.settings):
        raise _model_not_found(model)
    return model_card(model, service.started)


@router.post("/chat/completions", response_model=ChatCompletion, description=CHAT_DOC, responses=STREAMED)
async def chat_completions(body: ChatCompletionRequest, request: Request, service: ServiceDep,
                           caller: ReadCaller) -> ChatCompletion | EventSourceResponse:
    models = offered_models(service.settings)
    if body.model not in models:
        raise _model_not_found(body.model)
    question, history = conversation_of(body.messages)
    generator = models[body.model]
    filters = caller.filters()
    reply = _Reply(body.model)
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return await _stream(service, question, history, generator, filters, caller, request, reply, include_usage)
    answer = await service.ask(question, None, generator, filters, None, history, caller.person)
    return reply.completion(await record_answer(service, request, answer, caller), answer)


class _Reply:
    """The parts every object of one completion shares: model name and creation time."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.created = int(time.time())

    def completion(self, answer_id: str, answer: Answer) -> ChatCompletion:
        return ChatCompletion(id=f"chatcmpl-{answer_id}", created=self.created, model=self.model,
                              choices=[Choice(index=0, message=AssistantMessage(content=answer.answer))],
                              usage=Usage.of(answer), citations=citations(answer), query=answer.query or answer.question)

    def chunk(self, completion_id: str, delta: dict[str, Any] | None, finish: str | None = None,
              **extra: Any) -> ServerSentEvent:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None, "choices": choices, **extra}
        return ServerSentEvent(data=json.dumps(data, ensure_ascii=False))


def citations(answer: Answer) -> list[CitationBody]:
    return [CitationBody.model_validate(c, from_attributes=True) for c in answer.citations]


async def _stream(service: Service, question: str, history: list[Turn], generator: str | None, filters: list[str],
                  caller: Caller, request: Request, reply: _Reply, include_usage: bool) -> EventSourceResponse:
    items = service.ask_stream(question, None, generator, filters, None, history, caller.person)
    first = await anext(items)  # errors before the first item (a bad filter, a full queue) are plain HTTP errors
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
                    await record_answer(service, request, item, caller, answer_id)
                    for event in _finish(item, completion_id, "".join(streamed), reply, include_usage):
                        yield event
                item = await anext(items)
        except StopAsyncIteration:
            return
        except RagError as exc:  # a failure midway, or serve.timeout
            error = http_error(exc)
            body = openai_error(error.status_code, str(error.detail)).model_dump()
            yield ServerSentEvent(data=json.dumps(body, ensure_ascii=False))
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
    final = {"citations": [c.model_dump() for c in citations(answer)], "usage": Usage.of(answer).model_dump(),
             "query": answer.query or answer.question}
    if include_usage:  # OpenAI's usage chunk, with no choices, is then the last one
        events.append(reply.chunk(completion_id, {}, "stop"))
        events.append(reply.chunk(completion_id, None, **final))
    else:
        events.append(reply.chunk(completion_id, {}, "stop", **final))
    events.append(ServerSentEvent(data="[DONE]"))
    return events
