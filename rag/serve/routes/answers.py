"""POST /v1/search and POST /v1/ask (JSON, or Server-Sent Events with `stream: true`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from rag.answer import Answer, Passage
from rag.errors import RagError
from rag.serve.keys import ApiKey
from rag.serve.schemas import ERROR_RESPONSES, STREAMED, AskRequest, SearchRequest
from rag.serve.service import Service, access, http_error, key_filters

STREAM_DOC = """With `stream: true` the answer is Server-Sent Events, always in this order:
one `passages` event (the numbered passages given to the generator: number, doc_id, title,
source, location, score, text) before any text; `token` events ({"text"}) as the answer is
generated; one final `answer` event with the whole answer object (validated `citations`,
`abstained`, `grounded`, `warnings`, `timings`) and its `id`. An `error` event ({"status",
"detail"}) replaces `answer` when generation fails midway."""


def passage_dict(passage: Passage) -> dict[str, Any]:
    return asdict(passage) | {"chunk_ids": list(passage.chunk_ids)}


def router(service: Service) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["answers"], responses=ERROR_RESPONSES)
    read = Depends(access(service, "read"))

    @api.post("/search")
    async def search(body: SearchRequest, key: ApiKey | None = read) -> dict[str, Any]:
        """Ranked passages for a question, only from documents the key may see."""
        try:
            hits = await service.search(body.question, body.k, key_filters(key, body.filters), body.mode)
        except RagError as exc:
            raise http_error(exc) from None
        return {"hits": [hit.as_dict() for hit in hits]}

    @api.post("/ask", responses=STREAMED, description="A cited answer (or an honest \"I don't know\") from the passages the key "
                                  "may see: the `rag ask --json` object plus its `id`.\n\n" + STREAM_DOC)
    async def ask(body: AskRequest, request: Request, key: ApiKey | None = read) -> Any:
        filters = key_filters(key, body.filters)
        if body.stream:
            return await _stream(service, body, filters, key, request)
        try:
            answer = await service.ask(body.question, body.k, body.generator, filters, body.mode)
        except RagError as exc:
            raise http_error(exc) from None
        answer_id = await service.record(request, answer, key)
        return JSONResponse({"id": answer_id, **answer.as_dict()})

    return api


async def _stream(service: Service, body: AskRequest, filters: list[str], key: ApiKey | None,
                  request: Request) -> EventSourceResponse:
    items = service.ask_stream(body.question, body.k, body.generator, filters, body.mode)
    try:  # errors before the first event (a bad filter, a full queue) are plain HTTP errors
        first = await anext(items)
    except RagError as exc:
        raise http_error(exc) from None

    async def events() -> AsyncIterator[ServerSentEvent]:
        item: Any = first
        try:
            while True:
                if isinstance(item, list):
                    yield _event("passages", {"passages": [passage_dict(p) for p in item]})
                elif isinstance(item, str):
                    if item:
                        yield _event("token", {"text": item})
                elif isinstance(item, Answer):
                    yield _event("answer", {"id": await service.record(request, item, key), **item.as_dict()})
                item = await anext(items)
        except StopAsyncIteration:
            return
        except (RagError, HTTPException) as exc:  # a failure midway, or serve.timeout
            error = http_error(exc) if isinstance(exc, RagError) else exc
            yield _event("error", {"status": error.status_code, "detail": error.detail})
        finally:
            await items.aclose()

    return EventSourceResponse(events(), ping=15)


def _event(name: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data, ensure_ascii=False), event=name)
