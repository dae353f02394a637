"""Liveness, readiness, statistics (admin) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from rag.errors import RagError
from rag.serve.deps import AdminCaller, AnyCaller, ServiceDep
from rag.serve.schemas import ERROR_RESPONSES, Alive, IndexStatus, KeyInfo, OpenAccess, Readiness, Stats

router = APIRouter(tags=["operations"], responses=ERROR_RESPONSES)


@router.get("/healthz")
def healthz() -> Alive:
    """The process is alive (it may still be loading)."""
    return Alive(status="alive")


@router.get("/readyz", responses={503: {"model": Readiness, "description": "Still loading: not ready"}})
def readyz(service: ServiceDep, response: Response) -> Readiness:
    """Models and index are loaded: send traffic."""
    response.status_code = 200 if service.ready else 503
    return Readiness(ready=service.ready)


@router.get("/v1/stats", response_model_exclude_unset=True)
def stats(service: ServiceDep, caller: AdminCaller) -> Stats:
    """Index counts and version, models, request counts and latency percentiles per route and stage."""
    engine = service.engine
    index = IndexStatus(exists=engine.store.exists())
    if index.exists:
        try:
            reader = engine.reader()
            index = IndexStatus(exists=True, version=reader.version, counts=reader.manifest.counts,
                                updated_at=reader.manifest.updated_at)
        except RagError as exc:
            index = IndexStatus(exists=True, error=type(exc).__name__)
    models = {"embedding": engine.embedder.identity().get("model"), "generator": service.settings.answer.generator,
              "local_model": service.settings.generate.local_model,
              "reranker": service.settings.search.reranker or None}
    return Stats.model_validate({"index": index, "models": models, **service.metrics.summary()})


@router.get("/metrics", include_in_schema=False)
def metrics(service: ServiceDep, caller: AdminCaller) -> Response:
    """Prometheus text format. It counts every collection's documents, so once keys exist it
    needs an admin key (Prometheus: `authorization: {credentials_file: ...}`)."""
    return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/key")
def key_info(caller: AnyCaller) -> OpenAccess | KeyInfo:
    """The calling key's name, scope and filters (never its secret), and the person whose access
    applies (`user`, `groups`: the one an --on-behalf key passes, or the signed-in person), so
    that a client such as the page at / offers only what the caller may do; `{"open": true}`
    when the service has no keys (loopback only), where every route is open."""
    return OpenAccess(open=True) if caller.key is None and caller.person is None else KeyInfo.of(caller)
