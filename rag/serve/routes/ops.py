"""Liveness, readiness, statistics (admin) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from rag.errors import RagError
from rag.serve.keys import ApiKey
from rag.serve.schemas import ERROR_RESPONSES
from rag.serve.service import Service, access


def router(service: Service) -> APIRouter:
    api = APIRouter(tags=["operations"], responses=ERROR_RESPONSES)
    admin = Depends(access(service, "admin"))
    read = Depends(access(service, "read"))

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is alive (it may still be loading)."""
        return {"status": "alive"}

    @api.get("/readyz")
    def readyz() -> JSONResponse:
        """Models and index are loaded: send traffic."""
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @api.get("/v1/stats")
    def stats(key: ApiKey | None = admin) -> dict[str, Any]:
        """Index counts and version, models, request counts and latency percentiles per route and stage."""
        engine = service.engine
        index: dict[str, Any] = {"exists": engine.store.exists()}
        if index["exists"]:
            try:
                reader = engine.reader()
                index.update(version=reader.version, counts=reader.manifest.counts,
                             updated_at=reader.manifest.updated_at)
            except RagError as exc:
                index["error"] = type(exc).__name__
        models = {"embedding": engine.embedder.identity().get("model"),
                  "generator": service.settings.answer.generator,
                  "local_model": service.settings.generate.local_model,
                  "reranker": service.settings.search.reranker or None}
        return {"index": index, "models": models, **service.metrics.summary()}

    @api.get("/metrics", include_in_schema=False)
    def metrics(key: ApiKey | None = admin) -> Response:
        """Prometheus text format. It counts every collection's documents, so once keys exist it
        needs an admin key (Prometheus: `authorization: {credentials_file: ...}`)."""
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/v1/key")
    def key_info(key: ApiKey | None = read) -> dict[str, Any]:
        """The calling key's name, scope and filters (never its secret), so that a client such
        as the page at / offers only what the key may do; `{"open": true}` when the service
        has no keys (loopback only), where every route is open."""
        if key is None:
            return {"open": True}
        return {"open": False, "name": key.name, "scope": key.scope, "filters": list(key.filters)}

    return api
