"""The routes' dependencies: the app's Service, and the request's caller of a sufficient scope.

Every /v1 route takes a caller (rag.serve.callers): with keys configured a request needs
`Authorization: Bearer KEY` of the route's scope (401/403 otherwise); with oidc.issuer set, a
person's token from the identity provider (or the page's session) does too. The key's filters
are added to the request's (`Caller.filters`) and the person's access is passed to the Engine,
so both act inside the FAISS and BM25 searches. With no key configured, no provider and open
access (loopback), the caller is OPEN and every document may be read.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from rag.citations import Answer
from rag.errors import RagError
from rag.filters import Access
from rag.serve.callers import (GROUPS_HEADER, OPEN, PAGE_HEADER, SESSION_COOKIE, USER_HEADER, BadPerson, Caller,
                               passed_person)
from rag.serve.keys import Scope
from rag.serve.oidc import InvalidToken
from rag.serve.service import Service

log = logging.getLogger(__name__)


async def get_service(request: Request) -> Service:
    """The app's Service (async: a lookup, not worth a worker thread)."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def authorize(request: Request, service: Service, needed: Scope, person_required: bool = True) -> Caller:
    """The request's caller, when it may do what the route needs (401/403/400 otherwise):
    a key, the person an --on-behalf key passes, a person's bearer token or page session from
    the identity provider, or, in open access, anyone (OPEN)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    try:
        passed = passed_person(request.headers.get(USER_HEADER), request.headers.get(GROUPS_HEADER))
    except BadPerson as exc:
        raise HTTPException(400, str(exc)) from None
    if service.oidc is not None and not token.startswith("rag_"):
        session = request.cookies.get(SESSION_COOKIE, "") if request.headers.get(PAGE_HEADER) else ""
        if token or session:
            caller = _signed_in(service, token or session)
            return _checked(request, _refuse_passed(caller, passed), needed)
    caller = _with_key(request, service, token)
    if caller.key is not None and caller.key.on_behalf:
        if passed is None and person_required:
            raise HTTPException(400, f"key {caller.key.name!r} acts on behalf of people: send the person in "
                                     f"{USER_HEADER} (and their groups in {GROUPS_HEADER})")
        caller = Caller(caller.key, passed, caller.scope)
    else:
        caller = _refuse_passed(caller, passed)
    return _checked(request, caller, needed)


def _with_key(request: Request, service: Service, token: str) -> Caller:
    try:
        configured = service.keys.configured()
        key = service.keys.verify(token) if configured and token else None
    except RagError as exc:  # the key store cannot be read: the server's fault, answered 500 and logged
        raise RuntimeError(f"the key store cannot be read: {exc}") from exc
    if not configured and service.oidc is None:
        if service.open_access:
            return OPEN
        raise HTTPException(401, "this service has no keys yet; add one with `rag keys add NAME`")
    if key is None:
        hint = " or sign in with the identity provider" if service.oidc is not None else ""
        raise HTTPException(401, f"a valid API key is required: send Authorization: Bearer KEY{hint}",
                            headers={"WWW-Authenticate": "Bearer"})
    return Caller(key, None, key.scope)


def _signed_in(service: Service, token: str) -> Caller:
    assert service.oidc is not None
    try:
        person = service.oidc.person(token)
    except InvalidToken as exc:
        raise HTTPException(401, f"the identity token was not accepted: {exc}",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
    except RagError as exc:  # the provider cannot be reached: nobody can be checked now
        log.error("identity provider: %s", exc)
        raise HTTPException(503, "the identity provider cannot be reached; retry later",
                            headers={"Retry-After": "10"}) from None
    return Caller(None, person, service.settings.oidc.scope)


def _refuse_passed(caller: Caller, passed: Access | None) -> Caller:
    """Only an --on-behalf key may pass a person: anyone else sending the headers is refused,
    so that a header can never change whose access applies."""
    if passed is not None:
        who = f"key {caller.key.name!r}" if caller.key else ("a signed-in person" if caller.person else "open access")
        raise HTTPException(403, f"{who} may not act on behalf of others ({USER_HEADER}); portals that sign "
                                 "people in themselves use a key made with `rag keys add NAME --on-behalf`")
    return caller


def _checked(request: Request, caller: Caller, needed: Scope) -> Caller:
    request.state.key_name = caller.name
    request.state.caller = caller
    if not caller.allows(needed):
        what = f"key {caller.key.name!r}" if caller.key else "a signed-in person"
        raise HTTPException(403, f"{what} has scope {caller.scope!r}; this route needs {needed!r}")
    return caller


def read_caller(request: Request, service: ServiceDep) -> Caller:
    return authorize(request, service, "read")


def write_caller(request: Request, service: ServiceDep) -> Caller:
    return authorize(request, service, "write")


def admin_caller(request: Request, service: ServiceDep) -> Caller:
    return authorize(request, service, "admin")


def any_caller(request: Request, service: ServiceDep) -> Caller:
    """Any caller, an --on-behalf key without a person included (GET /v1/key)."""
    return authorize(request, service, "read", person_required=False)


ReadCaller = Annotated[Caller, Depends(read_caller)]
WriteCaller = Annotated[Caller, Depends(write_caller)]
AdminCaller = Annotated[Caller, Depends(admin_caller)]
AnyCaller = Annotated[Caller, Depends(any_caller)]


async def record_answer(service: Service, request: Request, answer: Answer, caller: Caller,
                        answer_id: str | None = None) -> str:
    """A finished answer, put in the request's access-log line (rag.serve.middleware.AccessLog)
    and counted and kept rateable by the service; returns its id."""
    request.state.log_fields = service.log_fields(answer)
    request.state.audit = (answer.question, [c.doc_id for c in answer.citations])
    return await service.record(answer, caller, answer_id)
