"""The HTTP service: routes translate requests to Engine calls and back; no retrieval logic here.

Every /v1 route passes through `authorize`: with keys configured a request needs
`Authorization: Bearer KEY` of a sufficient scope, and the key's filters are added to the
request's, so they act inside the FAISS and BM25 searches like any `--filter`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rag.config import Settings
from rag.engine import Engine
from rag.errors import ConfigError, IndexCorruptError, IndexMismatchError, IndexNotFoundError, RagError
from rag.serve.keys import ApiKey, KeyStore, Scope, keys_path

log = logging.getLogger(__name__)

Mode = Literal["hybrid", "dense", "bm25"]


class _Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=100_000)
    k: int | None = Field(default=None, ge=1, le=1000)
    filters: list[str] = Field(default_factory=list, max_length=32,
                               description="`rag search --filter` expressions, e.g. source=hr/*")


class SearchRequest(_Question):
    mode: Mode | None = None


class AskRequest(_Question):
    generator: Literal["local", "openai", "extractive"] | None = None


class Service:
    """What the routes share: the engine, the key store, and one lock per generator (a model
    answers one batch at a time)."""

    def __init__(self, settings: Settings, open_access: bool, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.keys = KeyStore(keys_path(settings.index.path, settings.serve.keys_file))
        self.open_access = open_access
        self.ready = False
        self._generation = threading.Lock()

    def start(self) -> None:
        """Load the models and open the index before the first request (so /readyz means it)."""
        self.engine.embedder.warm_up()
        if self.engine.store.exists():
            self.engine.reader()
        self.ready = True

    def generate(self, call: Callable[[], Any]) -> Any:
        with self._generation:
            return call()


def _access(service: Service, needed: Scope) -> Callable[[Request], ApiKey | None]:
    def authorize(request: Request) -> ApiKey | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not service.keys.configured():
            if service.open_access:
                return None
            raise HTTPException(401, "this service has no keys yet; add one with `rag keys add NAME`")
        key = service.keys.verify(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise HTTPException(401, "a valid API key is required: send Authorization: Bearer KEY",
                                headers={"WWW-Authenticate": "Bearer"})
        if not key.allows(needed):
            raise HTTPException(403, f"key {key.name!r} has scope {key.scope!r}; this route needs {needed!r}")
        request.state.key_name = key.name
        return key
    return authorize


def _filters(key: ApiKey | None, requested: list[str]) -> list[str]:
    """The request's filters and the key's: all must hold, so a key never sees past its own."""
    return [*(key.filters if key else ()), *requested]


def _error(exc: RagError) -> HTTPException:
    """RagErrors are the user's to act on, except those about the index files, whose messages
    name paths on the server: those are logged, and the client gets a short reason."""
    if isinstance(exc, (IndexNotFoundError, IndexCorruptError, IndexMismatchError)):
        log.error("index unavailable: %s", exc)
        return HTTPException(503, "the index is not available; the server's log says why")
    return HTTPException(422 if isinstance(exc, ConfigError) else 400, str(exc))


def create_app(settings: Settings, open_access: bool = False, engine: Engine | None = None) -> FastAPI:
    """The ASGI app; `open_access` serves without keys while none exist (loopback only)."""
    service = Service(settings, open_access, engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.engine.close()

    app = FastAPI(title="rag", version="0.1.0", lifespan=lifespan,
                  description="Cited answers and passages from your own documents.")
    app.state.service = service
    read = Depends(_access(service, "read"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": "internal error; the server's log has the details"}, status_code=500)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        ready = service.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.post("/v1/search")
    def search(body: SearchRequest, key: ApiKey | None = read) -> dict[str, Any]:
        """Ranked passages for a question, only from documents the key may see."""
        try:
            hits = service.engine.search(body.question, body.k, _filters(key, body.filters), body.mode)
        except RagError as exc:
            raise _error(exc) from None
        return {"hits": [hit.as_dict() for hit in hits]}

    @app.post("/v1/ask")
    def ask(body: AskRequest, key: ApiKey | None = read) -> dict[str, Any]:
        """A cited answer (or an honest "I don't know") from the passages the key may see."""
        filters = _filters(key, body.filters)
        try:
            answer = service.generate(lambda: service.engine.ask(body.question, body.k, body.generator, filters))
        except RagError as exc:
            raise _error(exc) from None
        return {"id": uuid.uuid4().hex, **answer.as_dict()}

    return app
