"""A stub of Confluence's REST API (v1) on 127.0.0.1, for the tests of rag.sources.confluence.

No real Confluence can run on these machines, so this answers exactly the calls the source makes,
in the shapes Atlassian's REST API documentation gives for Cloud (`/wiki/rest/api`) and Data Center
(`/rest/api`): a space (GET /space/{key}), a space's pages (GET /content?spaceKey=&type=page&expand=
&limit=&start=, paged with `_links.next` relative to `_links.base`), one page's body (GET
/content/{id}?expand=body.export_view|body.storage), a page's read restriction (GET
/content/{id}/restriction/byOperation/read), a page's attachments (GET /content/{id}/child/attachment)
and an attachment's download link (`_links.download`, /download/attachments/{page}/{file}).

What a test can change: `expand` (False: the listing ignores the restriction and attachment
expansions, as a server may, so the source must ask their endpoints), `embed_limit` (expanded
collections cut to this many), `max_limit` (a listing page's most results: pagination on small
spaces), `flavour` ("cloud": users by accountId; "datacenter": by username), `foreign_links`
(`_links.next` and downloads as absolute URLs on another host, as a proxied server may give),
`failures` (a substring of the request's path and query -> statuses answered first, one per
request), `delay` (a substring -> seconds slept first). `requests` holds every request's path and query.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit


@dataclass
class Attachment:
    id: str
    title: str
    data: bytes
    media_type: str = "application/pdf"
    version: int = 1


@dataclass
class Page:
    id: str
    space: str
    title: str
    body: str
    parent: str | None = None
    version: int = 1
    users: list[str] = field(default_factory=list)  # the read restriction's users (username or accountId)
    groups: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


class ConfluenceStub:
    def __init__(self, auth: str, context: str = "", flavour: str = "datacenter") -> None:
        self.auth = auth  # the Authorization header it accepts
        self.context = context
        self.flavour = flavour
        self.spaces: dict[str, str] = {}
        self.pages: dict[str, Page] = {}
        self.expand = True
        self.embed_limit = 25
        self.max_limit = 3
        self.foreign_links = False
        self.failures: dict[str, list[int]] = {}
        self.delay: dict[str, float] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, body, kind = stub.answer(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """What a source's url names (without the confluence+ scheme prefix)."""
        return f"http://127.0.0.1:{self.port}{self.context}"

    def start(self) -> ConfluenceStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, page: Page) -> Page:
        self.pages[page.id] = page
        return page

    def edit(self, page_id: str, body: str) -> None:
        """A new version of a page, as saving it in the editor makes."""
        self.pages[page_id].body = body
        self.pages[page_id].version += 1

    def count(self, needle: str) -> int:
        return sum(needle in r for r in self.requests)

    # Answers.

    def answer(self, target: str, authorization: str | None) -> tuple[int, bytes, str]:
        with self._lock:
            self.requests.append(target)
            status = next((s.pop(0) for n, s in self.failures.items() if n in target and s), None)
            pause = next((d for n, d in self.delay.items() if n in target), 0.0)
        time.sleep(pause)
        if authorization != self.auth:
            return _json(401, {"statusCode": 401, "message": "Basic or Bearer authentication failed"})
        if status is not None:
            return _json(status, {"statusCode": status, "message": "stub failure"})
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = unquote(parts.path).removeprefix(self.context)
        if path.startswith("/download/attachments/"):
            return self._download(path)
        route = path.removeprefix("/rest/api/").split("/")
        if path.startswith("/rest/api/space/") and len(route) == 2:
            if route[1] not in self.spaces:
                return _json(404, {"statusCode": 404, "message": f"No space with key : {route[1]}"})
            return _json(200, {"id": 98304, "key": route[1], "name": self.spaces[route[1]], "type": "global",
                               "_links": self._links(f"/rest/api/space/{route[1]}")})
        if path == "/rest/api/content":
            return _json(200, self._listing(query))
        page = self.pages.get(route[1]) if route[0] == "content" and len(route) > 1 else None
        if page is None:
            return _json(404, {"statusCode": 404, "message": "No content found"})
        if len(route) == 2:
            return _json(200, self._content(page, _expansions(query), body=True))
        if route[2:] == ["restriction", "byOperation", "read"]:
            start, limit = int(query.get("start", 0)), int(query.get("limit", 100))
            return _json(200, {"operation": "read", "restrictions": self._subjects(page, start, limit),
                               "_expandable": {"content": f"/rest/api/content/{page.id}"},
                               "_links": self._links(f"/rest/api/content/{page.id}/restriction/byOperation/read")})
        if route[2:] == ["child", "attachment"]:
            return _json(200, self._collection([self._attachment(page, a) for a in page.attachments], query,
                                               f"/rest/api/content/{page.id}/child/attachment"))
        return _json(404, {"statusCode": 404, "message": "No content found"})

    def _listing(self, query: dict[str, str]) -> dict[str, Any]:
        expand = _expansions(query)
        pages = sorted((p for p in self.pages.values() if p.space == query.get("spaceKey")), key=lambda p: int(p.id))
        return self._collection([self._content(p, expand) for p in pages], query, "/rest/api/content")

    def _collection(self, results: list[dict[str, Any]], query: dict[str, str], path: str) -> dict[str, Any]:
        start, limit = int(query.get("start", 0)), min(int(query.get("limit", 25)), self.max_limit)
        shown = results[start:start + limit]
        links = self._links(f"{path}?{urlencode(query)}")
        if start + limit < len(results):
            following = f"{path}?{urlencode({**query, 'limit': limit, 'start': start + limit})}"
            links["next"] = f"https://elsewhere.invalid{self.context}{following}" if self.foreign_links else following
        return {"results": shown, "start": start, "limit": limit, "size": len(shown), "_links": links}

    def _content(self, page: Page, expand: set[str], body: bool = False) -> dict[str, Any]:
        found: dict[str, Any] = {
            "id": page.id, "type": "page", "status": "current", "title": page.title,
            "_links": {"webui": f"/spaces/{page.space}/pages/{page.id}/{quote(page.title)}",
                       "self": f"{self.url}/rest/api/content/{page.id}"},
            "_expandable": {"container": f"/rest/api/space/{page.space}",
                            "children": f"/rest/api/content/{page.id}/child",
                            "restrictions": f"/rest/api/content/{page.id}/restriction/byOperation",
                            "space": f"/rest/api/space/{page.space}"}}
        if "version" in expand:
            found["version"] = {"by": self._user("admin"), "when": "2024-05-02T10:00:00.000Z",
                                "number": page.version, "minorEdit": False}
        if "ancestors" in expand:
            found["ancestors"] = [{"id": a.id, "type": "page", "status": "current", "title": a.title,
                                   "_links": {"webui": f"/spaces/{a.space}/pages/{a.id}"}}
                                  for a in self._ancestors(page)]
        if self.expand and "restrictions.read.restrictions.user" in expand:
            subjects = self._subjects(page, 0, self.embed_limit)
            found["restrictions"] = {"read": {"operation": "read", "restrictions": subjects,
                                              "_expandable": {"content": f"/rest/api/content/{page.id}"}}}
        if self.expand and "children.attachment" in expand:
            attachments = [self._attachment(page, a) for a in page.attachments]
            found["children"] = {"attachment": self._collection(attachments, {"limit": str(self.embed_limit)},
                                                                f"/rest/api/content/{page.id}/child/attachment")}
        for representation in ("export_view", "storage", "view"):
            if body and f"body.{representation}" in expand:
                found["body"] = {representation: {"value": page.body, "representation": representation}}
        return found

    def _ancestors(self, page: Page) -> list[Page]:
        chain: list[Page] = []
        parent = page.parent
        while parent is not None:
            chain.insert(0, self.pages[parent])
            parent = self.pages[parent].parent
        return chain

    def _subjects(self, page: Page, start: int, limit: int) -> dict[str, Any]:
        users = [self._user(u) for u in page.users][start:start + limit]
        groups = [{"type": "group", "name": g, "id": f"id-{g}"} for g in page.groups][start:start + limit]
        return {"user": {"results": users, "start": start, "limit": limit, "size": len(users)},
                "group": {"results": groups, "start": start, "limit": limit, "size": len(groups)}}

    def _user(self, name: str) -> dict[str, Any]:
        if self.flavour == "cloud":
            return {"type": "known", "accountId": name, "accountType": "atlassian", "email": "",
                    "publicName": name, "displayName": name}
        return {"type": "known", "username": name, "userKey": f"8a7f80{len(name):02d}", "displayName": name.title()}

    def _attachment(self, page: Page, attachment: Attachment) -> dict[str, Any]:
        download = (f"/download/attachments/{page.id}/{quote(attachment.title)}?version={attachment.version}"
                    f"&modificationDate=1714644000000&api=v2")
        if self.foreign_links:
            download = f"https://media.elsewhere.invalid{self.context}{download}"
        return {"id": attachment.id, "type": "attachment", "status": "current", "title": attachment.title,
                "version": {"number": attachment.version, "minorEdit": False},
                "metadata": {"mediaType": attachment.media_type},
                "extensions": {"mediaType": attachment.media_type, "fileSize": len(attachment.data), "comment": ""},
                "_links": {"webui": f"/pages/viewpageattachments.action?pageId={page.id}", "download": download,
                           "self": f"{self.url}/rest/api/content/{attachment.id}"}}

    def _download(self, path: str) -> tuple[int, bytes, str]:
        _, _, rest = path.partition("/download/attachments/")
        page_id, _, title = rest.partition("/")
        page = self.pages.get(page_id)
        for attachment in page.attachments if page else []:
            if attachment.title == title:
                return 200, attachment.data, attachment.media_type
        return 404, b"not found", "text/plain"

    def _links(self, self_link: str) -> dict[str, str]:
        base = f"https://elsewhere.invalid{self.context}" if self.foreign_links else self.url
        return {"base": base, "context": self.context, "self": base + self_link}


def _expansions(query: dict[str, str]) -> set[str]:
    """Each expansion named, with the ones it implies ("a.b.c" expands "a" and "a.b")."""
    named: set[str] = set()
    for entry in filter(None, query.get("expand", "").split(",")):
        parts = entry.split(".")
        named.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return named


def _json(status: int, payload: dict[str, Any]) -> tuple[int, bytes, str]:
    return status, json.dumps(payload).encode(), "application/json"
