"""How errors become HTTP answers, in one place: RagErrors (the service's Busy and TimedOut
among them), invalid requests, clients that went away, and anything unexpected.

Routes raise; they never translate errors themselves. The OpenAI-compatible routes use the same
mapping (`http_error`) and only change the body's shape.
"""

from __future__ import annotations

import logging
import os
import re

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from rag.errors import (ConfigError, IndexCorruptError, IndexLockedError, IndexMismatchError, IndexNotFoundError,
                        RagError)
from rag.serve.errors import Busy, TimedOut
from rag.serve.spool import SpoolFull

log = logging.getLogger(__name__)

# An absolute path: a slash, then characters a path holds, up to a space, quote or bracket.
_PATH = re.compile(r"(?<![\w.~-])/[^\s'\"`,;()\[\]{}<>]+")


def without_server_paths(text: str) -> str:
    """The text with every absolute path on this machine (whose first folder exists here, so
    routes such as /v1/ask stay) replaced: error bodies must not map the server's disk."""
    def hide(match: re.Match[str]) -> str:
        first = match.group(0).lstrip("/").split("/", 1)[0]
        return "<a path on the server>" if first and os.path.isdir("/" + first) else match.group(0)
    return _PATH.sub(hide, text)


def http_error(exc: RagError) -> HTTPException:
    """RagErrors are the user's to act on, except those about the index files, whose messages
    name paths on the server: those are logged, and the client gets a short reason. A busy
    server says when to retry."""
    if isinstance(exc, SpoolFull):
        return HTTPException(503, str(exc), headers={"Retry-After": "30"})
    if isinstance(exc, Busy):
        return HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, TimedOut):
        return HTTPException(504, str(exc))
    if isinstance(exc, IndexLockedError):
        return HTTPException(503, "the index is being written by another process; retry when it is done",
                             headers={"Retry-After": "5"})
    if isinstance(exc, (IndexNotFoundError, IndexCorruptError, IndexMismatchError)):
        log.error("index unavailable: %s", exc)
        return HTTPException(503, "the index is not available; the server's log says why")
    return HTTPException(422 if isinstance(exc, ConfigError) else 400, without_server_paths(str(exc)))


async def rag_error(request: Request, exc: RagError) -> Response:
    return await http_exception_handler(request, http_error(exc))


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default echoes the input back; a request may carry secrets or personal data.
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()[:20]]
    return JSONResponse({"detail": errors}, status_code=422)


async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
    # The client closed, or serve.body_timeout cut it off (rag.serve.connections), before its
    # body was complete: nobody reads this answer; it is logged as such, not as a 500.
    cut = getattr(request.state, "log_fields", {}).get("cut_off")
    return Response(status_code=408 if cut else 499)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": "internal error; the server's log has the details"}, status_code=500)


def install_handlers(app: FastAPI) -> None:
    app.exception_handler(RagError)(rag_error)
    app.exception_handler(RequestValidationError)(invalid)
    app.exception_handler(ClientDisconnect)(client_gone)
    app.exception_handler(Exception)(unexpected)
