"""POST /v1/search and POST /v1/ask (JSON, or Server-Sent Events with `stream: true`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from rag.citations import Answer, Retrieved
from rag.errors import RagError
from rag.serve.callers import Caller
from rag.serve.deps import ReadCaller, ServiceDep, record_answer
from rag.serve.handlers import http_error
from rag.serve.schemas import (ERROR_RESPONSES, STREAMED, AnswerBody, AskRequest, PassageBody, PassagesEvent,
                               SearchRequest, SearchResults)
from rag.serve.service import Service

STREAM_DOC = """With `stream: true` the answer is Server-Sent Events, always in this order:
one `passages` event (`query`, what was searched, and the numbered passages given to the
generator: number, doc_id, title, source, location, score, text) before any text; `token` events ({"text"}) as the answer is
generated; one final `answer` event with the whole answer object (validated `citations`,
`abstained`, `grounded`, `warnings`, `timings`) and its `id`. An `error` event ({"status",
"detail"}) replaces `answer` when generation fails midway."""

router = APIRouter(prefix="/v1", tags=["answers"], responses=ERROR_RESPONSES)


@router.post("/search")
async def search(body: SearchRequest, request: Request, service: ServiceDep, caller: ReadCaller) -> SearchResults:
    """Ranked passages for a question, only from documents the caller may see."""
    hits = await service.search(body.question, body.k, caller.filters(body.filters), body.mode, body.turns(),
                                caller.person)
    request.state.audit = (body.question, [h.doc_id for h in hits])
    return SearchResults.of(service.engine.search_query(body.question, body.turns()), hits)


@router.post("/ask", response_model=AnswerBody, responses=STREAMED,
             description="A cited answer (or an honest \"I don't know\") from the passages the key may see: the "
                         "`rag ask --json` object plus its `id`.\n\n" + STREAM_DOC)
async def ask(body: AskRequest, request: Request, service: ServiceDep,
              caller: ReadCaller) -> AnswerBody | EventSourceResponse:
    filters = caller.filters(body.filters)
    if body.stream:
        return await _stream(service, body, filters, caller, request)
    answer = await service.ask(body.question, body.k, body.generator, filters, body.mode, body.turns(), caller.person)
    return AnswerBody.of(await record_answer(service, request, answer, caller), answer)


async def _stream(service: Service, body: AskRequest, filters: list[str], caller: Caller,
                  request: Request) -> EventSourceResponse:
    items = service.ask_stream(body.question, body.k, body.generator, filters, body.mode, body.turns(),
                               caller.person)
    first = await anext(items)  # errors before the first event (a bad filter, a full queue) are plain HTTP errors

    async def events() -> AsyncIterator[ServerSentEvent]:
        item: Any = first
        try:
            while True:
                if isinstance(item, Retrieved):
                    passages = [PassageBody.model_validate(p, from_attributes=True) for p in item.passages]
                    yield _event("passages", PassagesEvent(query=item.query, passages=passages).model_dump())
                elif isinstance(item, str):
                    if item:
                        yield _event("token", {"text": item})
                elif isinstance(item, Answer):
                    answer_id = await record_answer(service, request, item, caller)
                    yield _event("answer", AnswerBody.of(answer_id, item).model_dump())
                item = await anext(items)
        except StopAsyncIteration:
            return
        except RagError as exc:  # a failure midway, or serve.timeout
            error = http_error(exc)
            yield _event("error", {"status": error.status_code, "detail": error.detail})
        finally:
            await items.aclose()

    return EventSourceResponse(events(), ping=15)


def _event(name: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data, ensure_ascii=False), event=name)
