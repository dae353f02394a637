"""ASGI middleware: one JSON access-log line and the request metrics per request, and the
request body limits (413 before a byte too many is read)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.serve.audit import RequestAudit
from rag.serve.metrics import Metrics

access_log = logging.getLogger("rag.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def log_access_to_stderr() -> None:
    """Access-log lines go to stderr as bare JSON, one per line (for log shippers), whatever
    else the process logs and how."""
    if not any(getattr(h, "rag_access", False) for h in access_log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.rag_access = True  # type: ignore[attr-defined]
        access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


class AccessLog:
    """Logs `{"request_id", "method", "route", "status", "seconds", "key", ...}` when the last
    byte of the response is sent (so a streamed answer is timed to its end), never the key
    itself; the request id comes from X-Request-ID when the client sent a sane one."""

    def __init__(self, app: ASGIApp, metrics: Metrics, audit: RequestAudit | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.audit = audit  # serve.audit: every /v1 and /auth request is also recorded there

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent = dict((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", []))
        given = sent.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        logged = False

        def finish() -> None:
            nonlocal logged
            if logged:
                return
            logged = True
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            state: dict[str, Any] = scope.get("state", {})
            # Cut off by a deadline (rag.serve.connections), which answered 408 itself; whatever
            # the app replied to the half-read request was never sent.
            shown = 408 if "cut_off" in state.get("log_fields", {}) else status
            self.metrics.observe_request(route, scope["method"], shown, seconds)
            line = {"request_id": request_id, "method": scope["method"], "route": route, "path": scope["path"],
                    "status": shown, "seconds": round(seconds, 4), "key": state.get("key_name"),
                    "client": (scope.get("client") or ("", 0))[0], **state.get("log_fields", {})}
            access_log.info(json.dumps(line, ensure_ascii=False))
            if self.audit is not None and scope["path"].startswith(("/v1/", "/auth/")):
                self.audit.request(state, request_id, scope["method"], scope["path"], shown, line["client"] or None)

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()

        try:
            await self.app(scope, receive, send_logged)
        finally:
            finish()



class BodyLimit:
    """413 for a request body over its limit, with a JSON detail naming the setting to change
    (Starlette's own limit answers a bare "Content Too Large"): uploads (POST /v1/documents)
    get serve.max_upload_mb, every other request serve.max_request_mb."""

    def __init__(self, app: ASGIApp, request_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.request_bytes = request_bytes
        self.upload_bytes = upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/documents"
        limit = self.upload_bytes if upload else self.request_bytes
        detail = (f"the request body is over {limit / 2**20:g} MB "
                  f"({'serve.max_upload_mb' if upload else 'serve.max_request_mb'}); send less, or raise the setting")
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            body = json.dumps({"detail": detail}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a body without Content-Length, or longer than it said
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, limited, send)


# Host names that can only be this machine: what a browser sends when a page of this machine
# calls it. A DNS-rebinding page calls it under its own name, which is refused.
_LOOPBACK_HOST = re.compile(r"^(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?$", re.I)


class OpenModeGuard:
    """While no key exists the service answers without one, so only requests that cannot come
    from another site's page are served: a loopback `Host` (no DNS rebinding) unless the
    operator opened the network with --insecure-no-auth, and no cross-site `Origin` or
    `Sec-Fetch-Site` (a form another page submits needs no CORS preflight, so a cross-site
    upload or delete would otherwise go through). Origins in serve.cors_origins are trusted."""

    def __init__(self, app: ASGIApp, is_open: Any, loopback_only: bool, trusted_origins: list[str]) -> None:
        self.app = app
        self.is_open = is_open  # () -> bool: no key was ever made
        self.loopback_only = loopback_only
        self.trusted = {o.rstrip("/").lower() for o in trusted_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.is_open():
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        refusal = None
        if self.loopback_only and not _LOOPBACK_HOST.match(host):
            refusal = (f"this server has no API keys yet, so it answers only requests to localhost or 127.0.0.1, "
                       f"not to {host[:100]!r}; add a key (`rag keys add NAME`) to serve other names")
        else:
            origin = headers.get("origin", "").rstrip("/").lower()
            own = {f"{scheme}://{host.lower()}" for scheme in ("http", "https")}
            fetch_site = headers.get("sec-fetch-site", "").lower()
            # Following a link here shows the person the page or a listing; nothing reaches the other site.
            followed = scope["method"] in ("GET", "HEAD") and headers.get("sec-fetch-mode") == "navigate"
            if (origin and origin not in own and origin not in self.trusted) or (
                    fetch_site in ("cross-site", "same-site") and origin not in self.trusted and not followed):
                refusal = ("this server has no API keys yet, so it refuses requests from other sites' pages; open "
                           "its own page, or add a key (`rag keys add NAME`) and send it")
        if refusal is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": refusal}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
