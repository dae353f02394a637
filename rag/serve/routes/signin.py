"""The page's sign-in with the company's identity provider (oidc.issuer): OpenID Connect's
authorization code flow with PKCE.

GET /auth/login sends the browser to the provider with a fresh state, nonce and code challenge
(kept for the round trip in a short-lived HttpOnly cookie); GET /auth/callback checks the state,
exchanges the code (with the verifier) for tokens, checks the ID token like any bearer token
(signature, issuer, audience, expiry, and the nonce), and keeps it as the session: an HttpOnly,
Secure, SameSite=Lax cookie the page's script can never read, honoured only on requests that carry
the page's own header (rag.serve.callers). POST /auth/logout ends the session. The session ends
when the ID token expires; the person then signs in again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from typing import Annotated

import httpx
from fastapi import APIRouter, Cookie, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from rag.errors import RagError
from rag.serve.callers import PAGE_HEADER, SESSION_COOKIE
from rag.serve.deps import ServiceDep
from rag.serve.oidc import InvalidToken, Provider
from rag.serve.service import Service

log = logging.getLogger(__name__)
router = APIRouter(prefix="/auth", include_in_schema=False)
_FLOW_COOKIE = "rag_signin"
_FLOW_SECONDS = 600  # time a person has at the provider's sign-in page


@router.get("/status")
def status(service: ServiceDep) -> dict[str, bool]:
    """Whether people sign in here (the page then offers that instead of asking for a key)."""
    return {"oidc": service.oidc is not None}


@router.get("/login")
def login(request: Request, service: ServiceDep) -> Response:
    provider = _provider(service)
    state, verifier, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(64), secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    settings = service.settings.oidc
    query = httpx.QueryParams({
        "response_type": "code", "client_id": settings.client_id or settings.audience,
        "redirect_uri": _redirect_uri(request, service), "scope": settings.login_scopes, "state": state,
        "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"})
    response = RedirectResponse(f"{provider.authorization_endpoint}?{query}", status_code=303)
    # URL-safe base64 parts joined by dots: nothing a cookie would have to quote.
    response.set_cookie(_FLOW_COOKIE, f"{state}.{verifier}.{nonce}",
                        max_age=_FLOW_SECONDS, path="/auth", httponly=True, secure=True, samesite="lax")
    return response


@router.get("/callback")
def callback(request: Request, service: ServiceDep,
             flow: Annotated[str | None, Cookie(alias=_FLOW_COOKIE)] = None) -> Response:
    params = request.query_params
    if "error" in params:
        return _refused(f"the identity provider did not sign you in: {params.get('error')}"
                        f"{' (' + params['error_description'] + ')' if params.get('error_description') else ''}")
    parts = (flow or "").split(".")
    if len(parts) != 3 or not all(parts):
        return _refused("this sign-in was not started here, or took longer than 10 minutes; start again")
    state, verifier, nonce = parts
    if not hmac.compare_digest(params.get("state", "").encode(), state.encode()) or not params.get("code"):
        return _refused("this sign-in's state does not match the one this browser started; start again")
    id_token = _exchange(request, service, params["code"], verifier)
    try:
        claims = service.oidc.claims(id_token, nonce=nonce)  # type: ignore[union-attr]
    except InvalidToken as exc:
        return _refused(f"the identity provider's token was not accepted: {exc}")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, id_token, max_age=max(1, int(claims["exp"] - time.time())), path="/",
                        httponly=True, secure=True, samesite="lax")
    response.delete_cookie(_FLOW_COOKIE, path="/auth", httponly=True, secure=True, samesite="lax")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """Ends this browser's session (the provider's own session is the provider's to end)."""
    if not request.headers.get(PAGE_HEADER):
        raise HTTPException(400, f"sign out from the page (it sends {PAGE_HEADER})")
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, secure=True, samesite="lax")
    return response


def _provider(service: Service) -> Provider:
    if service.oidc is None:
        raise HTTPException(404, "sign-in is not configured here (oidc.issuer); use an API key")
    try:
        return service.oidc.provider()
    except RagError as exc:
        log.error("identity provider: %s", exc)
        raise HTTPException(503, "the identity provider cannot be reached; retry later") from None


def _redirect_uri(request: Request, service: Service) -> str:
    return service.settings.oidc.redirect_url or str(request.url_for("callback"))


def _exchange(request: Request, service: Service, code: str, verifier: str) -> str:
    """The ID token for this code, from the provider's token endpoint."""
    settings = service.settings.oidc
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": _redirect_uri(request, service),
            "client_id": settings.client_id or settings.audience, "code_verifier": verifier}
    if settings.client_secret:
        form["client_secret"] = settings.client_secret
    try:
        reply = httpx.post(_provider(service).token_endpoint, data=form, timeout=10.0)
        token = reply.json().get("id_token") if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        log.error("identity provider token endpoint: %s", exc)
        raise HTTPException(503, "the identity provider cannot be reached; retry later") from None
    if not isinstance(token, str):
        log.warning("token endpoint answered %s: %s", reply.status_code, reply.text[:500])
        raise HTTPException(400, "the identity provider did not give an ID token for this sign-in; start again")
    return token


def _refused(message: str) -> Response:
    return PlainTextResponse(message + "\n", status_code=400)
