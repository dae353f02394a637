"""GET /: the portal page, for teams that will not write a portal of their own.

Plain HTML, CSS and JavaScript shipped in the package (rag/serve/page/), served by the service
itself: no build step, nothing fetched from anywhere else. The page calls the same /v1 routes
as any client, with the key its user enters, so it can do nothing a key could not.

Documents are untrusted input: a passage may hold `<script>`. The page only ever inserts them
as text, and its Content-Security-Policy allows no script but its own file besides, so even a
mistake there could not run what a document contains.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

# Scripts, styles, images and requests from this origin only; no inline script or style, no
# plugins, no <base> rewriting, no native form submission (a key must never land in a URL),
# and no framing by other sites (clickjacking).
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
    "object-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"))
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidated on each load, so that an upgraded server is never shown with an older script.
    "Cache-Control": "no-cache",
}
# The page's files and their types: only these are served, so no path can reach anything else.
PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


# `/` (the page) and `/page/{name}` (its script, style and icon), with the page's headers.
router = APIRouter(include_in_schema=False)
_FOLDER = resources.files("rag.serve") / "page"
_FILES = {name: (_FOLDER / name).read_bytes() for name in PAGE_FILES}


def _send(name: str) -> Response:
    return Response(_FILES[name], media_type=PAGE_FILES[name], headers=_HEADERS)


@router.get("/")
def page() -> Response:
    """The portal: ask, check sources, filter, rate; with a write key, upload and manage."""
    return _send("index.html")


@router.get("/page/{name}")
def page_file(name: str) -> Response:
    if name not in _FILES or name == "index.html":
        raise HTTPException(404, f"the page has no file {name!r}")
    return _send(name)
