"""The HTTP service: FastAPI wiring of the route families over one Service.

Routes translate requests to Engine calls and back; no retrieval logic lives here. Every /v1
route takes the request's key (rag.serve.deps): with keys configured a request needs
`Authorization: Bearer KEY` of a sufficient scope, and the key's filters are added to the
request's, so they act inside the FAISS and BM25 searches like any `--filter`. Errors are
answered by the handlers of rag.serve.handlers, never by the routes themselves.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from rag.config import Settings
from rag.engine import Engine
from rag.serve.handlers import install_handlers
from rag.serve.middleware import AccessLog, BodyLimit, OpenModeGuard, log_access_to_stderr
from rag.serve.routes import answers, documents, feedback, openai_compat, ops, page, signin
from rag.serve.service import Service
from rag.sources.settings import SourceSettings, declared_sources

# How `rag serve --workers N` hands each worker process what the command line said.
OPEN_ACCESS_ENV = "RAG_SERVE_OPEN_ACCESS"  # "0", "1" (loopback names only) or NETWORK_OPEN
NETWORK_OPEN = "network"  # --insecure-no-auth on an address other machines reach
CONFIG_ENV = "RAG_CONFIG"


def create_app(settings: Settings, open_access: bool = False, engine: Engine | None = None,
               loopback_only: bool = True, sources: Sequence[SourceSettings] = ()) -> FastAPI:
    """The ASGI app; `open_access` serves without keys while none exist, to loopback names only
    unless `loopback_only` is off (--insecure-no-auth on a network address); `sources` with a
    schedule are run by it (rag.serve.schedule)."""
    service = Service(settings, open_access, engine, sources)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        service.metrics.start()
        yield
        service.close()
        service.metrics.close()

    app = FastAPI(title="rag", version="0.1.0", lifespan=lifespan,
                  description="Cited answers and passages from your own documents.")
    app.state.service = service
    service.jobs.on_finish.append(lambda job: service.metrics.jobs.labels(job.state).inc())

    install_handlers(app)
    for family in (ops, answers, documents, feedback, openai_compat, page, signin):
        app.include_router(family.router)

    if settings.serve.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.serve.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After", "Location"])
    app.add_middleware(BodyLimit, request_bytes=int(settings.serve.max_request_mb * 2**20),
                       upload_bytes=int(settings.serve.max_upload_mb * 2**20))
    if open_access:
        app.add_middleware(OpenModeGuard, is_open=lambda: not service.keys.configured(),
                           loopback_only=loopback_only, trusted_origins=settings.serve.cors_origins)
    app.add_middleware(AccessLog, metrics=service.metrics, audit=service.audit)
    return app


def app_from_environment() -> FastAPI:
    """The app of one `rag serve --workers N` worker: settings from RAG_* and RAG_CONFIG, and
    the metrics folder all workers share from PROMETHEUS_MULTIPROC_DIR, as the parent process
    set them."""
    log_access_to_stderr()
    mode = os.environ.get(OPEN_ACCESS_ENV, "0")
    return create_app(Settings.load(), open_access=mode in ("1", NETWORK_OPEN), loopback_only=mode != NETWORK_OPEN,
                      sources=declared_sources(os.environ.get(CONFIG_ENV) or None))
