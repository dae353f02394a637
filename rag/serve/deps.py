"""The routes' dependencies: the app's Service, and the request's key of a sufficient scope.

Every /v1 route takes a key: with keys configured a request needs `Authorization: Bearer KEY`
of the route's scope (401/403 otherwise), and the key's filters are added to the request's
(`key_filters`), so they act inside the FAISS and BM25 searches like any `--filter`. With no key
configured and open access (loopback), the key is None and every document may be read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from rag.citations import Answer
from rag.errors import RagError
from rag.serve.keys import ApiKey, Scope
from rag.serve.service import Service


async def get_service(request: Request) -> Service:
    """The app's Service (async: a lookup, not worth a worker thread)."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def authorize(request: Request, service: Service, needed: Scope) -> ApiKey | None:
    """The request's key, when it has the scope (401/403 otherwise); None in open access."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        configured = service.keys.configured()
        key = service.keys.verify(token.strip()) if configured and scheme.lower() == "bearer" else None
    except RagError as exc:  # the key store cannot be read: the server's fault, answered 500 and logged
        raise RuntimeError(f"the key store cannot be read: {exc}") from exc
    if not configured:
        if service.open_access:
            return None
        raise HTTPException(401, "this service has no keys yet; add one with `rag keys add NAME`")
    if key is None:
        raise HTTPException(401, "a valid API key is required: send Authorization: Bearer KEY",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.key_name = key.name
    if not key.allows(needed):
        raise HTTPException(403, f"key {key.name!r} has scope {key.scope!r}; this route needs {needed!r}")
    return key


def read_key(request: Request, service: ServiceDep) -> ApiKey | None:
    return authorize(request, service, "read")


def write_key(request: Request, service: ServiceDep) -> ApiKey | None:
    return authorize(request, service, "write")


def admin_key(request: Request, service: ServiceDep) -> ApiKey | None:
    return authorize(request, service, "admin")


ReadKey = Annotated[ApiKey | None, Depends(read_key)]
WriteKey = Annotated[ApiKey | None, Depends(write_key)]
AdminKey = Annotated[ApiKey | None, Depends(admin_key)]


def key_filters(key: ApiKey | None, requested: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The key's filters and the request's: all must hold, so a key never sees past its own."""
    return [*(key.filters if key else ()), *requested]


async def record_answer(service: Service, request: Request, answer: Answer, key: ApiKey | None,
                        answer_id: str | None = None) -> str:
    """A finished answer, put in the request's access-log line (rag.serve.middleware.AccessLog)
    and counted and kept rateable by the service; returns its id."""
    request.state.log_fields = service.log_fields(answer)
    return await service.record(answer, key, answer_id)
