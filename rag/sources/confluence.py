"""Confluence Cloud and Data Center as a source, through the REST API (v1, `/rest/api`) with httpx.

    [[sources]]
    name = "wiki"
    url = "confluence+https://example.atlassian.net/wiki"    # Data Center: confluence+https://wiki.corp[/context]
    options = {spaces = ["HR", "ENG"]}
    credentials = {username = "WIKI_EMAIL", token = "WIKI_API_TOKEN"}  # Cloud: e-mail and API token (basic)
    # credentials = {token = "WIKI_PAT"}                                # Data Center: personal access token (Bearer)

- The API lives under the URL given (`/rest/api` below it: `/wiki/rest/api` on Cloud, where a bare
  `*.atlassian.net` gets `/wiki`). Links the server returns (`_links.next`, downloads) are followed
  only on that host, so the credentials never leave it.
- Items: each current page of each space as `SPACE/Ancestor/.../Title.html` (titles with "/" and
  control characters replaced), its version `page:{version.number}`; each attachment of a page as
  `SPACE/.../Title/file.pdf`, version `attachment:{version.number}`, read by the loader of its suffix.
  A page that is moved or renamed (or whose ancestor is) gets a new id: its old document is removed
  and the page is read again. Two items whose ids would be equal get `~{content id}` before the suffix.
- A page's body (`options.body`: "export_view", the rendered page, by default; or "storage") is
  written as HTML whose <h1> is the hierarchy, "Space name > Ancestor > ... > Title", and whose own
  headings move one level down: the loader's heading path starts with where the page sits.
- Read restrictions, the page's own and its ancestors' (Confluence applies those too), become the
  item's access list {"users", "groups"} (users by username on Data Center, by accountId on Cloud);
  a page with none gets no list, so the collection's default applies. Several levels are
  intersected, which never grants more than Confluence does (it may grant less: a user admitted by
  name at one level and by group at another is left out). The list is part of the version
  (`;read=` and a digest), so a changed restriction reaches the index with no edit of the page.
- Requests: one listing per `limit` pages (restrictions and attachments expanded in it; where a
  server leaves them out or cuts them short, the page's restriction and attachment endpoints are
  asked), one per space, and only new or changed pages and attachments are fetched.
- Failing the run, deleting nothing: a space that does not exist or cannot be read, refused
  credentials (401, 403), a 5xx or timeout anywhere in a listing. A 429 is waited out twice.
- Options: `spaces` (required), `body`, `attachments` (true), `limit` (50 a listing request),
  `timeout` (30 s), `verify` (false or a CA bundle's path), `max_bytes` (100 MiB an attachment).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.errors import ConfigError
from rag.records import Acl
from rag.sources.base import Item, SourceError
from rag.sources.settings import SourceSettings

_EXPAND = "version,ancestors,restrictions.read.restrictions.user,restrictions.read.restrictions.group"
_ATTACHMENTS = ",children.attachment.version"
_CREDENTIALS = {"username", "token"}
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]+")
_HEADING = re.compile(r"<(/?)h([1-6])(?=[\s>/])", re.IGNORECASE)
_MAX_REQUESTS = 100_000  # listing requests per space: a server whose `next` never ends fails the run
_RETRIES = 2  # 429s waited out per request
_MAX_WAIT = 30.0


class _Refused(SourceError):
    """Confluence answered a request with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ConfluenceOptions(BaseModel):
    """The `options` a Confluence source reads; another one is a typo, named in the error."""

    model_config = ConfigDict(extra="forbid")

    spaces: list[str] = Field(min_length=1)
    body: Literal["export_view", "storage", "view"] = "export_view"
    attachments: bool = True
    limit: int = Field(50, ge=1, le=250)
    timeout: float = Field(30.0, gt=0)
    verify: bool | str = True
    max_bytes: int = Field(100 * 2**20, ge=1)


@dataclass
class _Restriction:
    """Who a page's own read restriction admits (both empty: it has none)."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()


@dataclass
class _Page:
    """A listed page: where it sits, its own restriction (None: not known yet) and attachments."""

    id: str
    title: str
    version: int
    ancestors: list[tuple[str, str]]  # (id, title), the space's root first
    restriction: _Restriction | None
    attachments: list[dict[str, Any]] | None  # None: not in the listing, asked for separately


@dataclass
class _Entry:
    """What fetch() needs for an item: the page's id and heading path, or an attachment's link."""

    content_id: str
    title: str = ""
    heading: str = ""
    download: str = ""


@dataclass
class _Space:
    key: str
    name: str
    pages: dict[str, _Page] = field(default_factory=dict)


class ConfluenceSource:
    """The pages and attachments of some spaces of one Confluence site."""

    def __init__(self, declared: SourceSettings) -> None:
        self.name = declared.name
        try:
            self.options = ConfluenceOptions.model_validate(declared.options)
        except ValidationError as exc:
            problems = "; ".join(f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"source {self.name!r}: {problems}") from None
        self.base, self.origin, self.context = _site(declared.url.removeprefix("confluence+"), self.name)
        secrets = declared.secrets()  # ConfigError naming a variable that is not set
        if set(secrets) - _CREDENTIALS or ("username" in secrets and "token" not in secrets):
            raise ConfigError(f"source {self.name!r}: a Confluence source's credentials are {{username, token}} "
                              "(Cloud: e-mail and API token) or {token} (Data Center: personal access token)")
        self._token = secrets.get("token") or ""
        headers = {"Accept": "application/json", "User-Agent": "rag"}
        if "username" in secrets:
            pair = f"{secrets['username']}:{secrets['token']}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif "token" in secrets:
            headers["Authorization"] = f"Bearer {secrets['token']}"
        # Redirects (Cloud's downloads go to its media host) drop the Authorization header off this host.
        verify = self.options.verify
        context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self._client = httpx.Client(headers=headers, timeout=self.options.timeout, follow_redirects=True,
                                    verify=context)
        self._entries: dict[str, _Entry] = {}
        self._restrictions: dict[str, _Restriction] = {}

    def items(self) -> Iterator[Item]:
        """Every current page and attachment of the spaces; SourceError (nothing deleted) when a
        space or any part of a listing cannot be read."""
        self._entries, self._restrictions = {}, {}
        listed: list[tuple[Item, _Entry]] = []
        for key in self.options.spaces:
            space = self._space(key)
            for page in self._list_pages(space):
                space.pages[page.id] = page
            listed.extend(self._space_items(space))
        for item, entry in _unique(listed):
            self._entries[item.id] = entry
            yield item

    def fetch(self, item: Item) -> bytes:
        """A page as HTML headed by its hierarchy, or an attachment's bytes."""
        entry = self._entries.get(item.id)
        if entry is None:
            raise SourceError(f"source {self.name!r}: {item.id} was not in the last listing")
        if entry.download:
            return self._download(item.id, entry.download)
        representation = self.options.body
        page = self._get(f"content/{entry.content_id}", {"expand": f"body.{representation}"}, item.id)
        body = str(((page.get("body") or {}).get(representation) or {}).get("value") or "")
        return _page_html(entry.title, entry.heading, body).encode("utf-8")

    def close(self) -> None:
        self._client.close()

    # Listing.

    def _space(self, key: str) -> _Space:
        """The space, checked first: a space that is gone or unreadable must not list as empty."""
        try:
            found = self._get(f"space/{quote(key, safe='~')}", None, f"space {key}", listing=True)
        except _Refused as exc:
            if exc.status == 404:
                raise SourceError(f"source {self.name!r}: space {key!r} does not exist or these credentials "
                                  "may not read it; nothing was deleted") from None
            raise
        return _Space(key, str(found.get("name") or key))

    def _list_pages(self, space: _Space) -> Iterator[_Page]:
        expand = _EXPAND + (_ATTACHMENTS if self.options.attachments else "")
        params = {"spaceKey": space.key, "type": "page", "status": "current", "expand": expand,
                  "limit": self.options.limit, "start": 0}
        for found in self._results("content", params, f"the pages of space {space.key}"):
            ancestors = [(str(a["id"]), str(a.get("title") or "")) for a in found.get("ancestors") or []]
            attachments = _embedded((found.get("children") or {}).get("attachment")) if self.options.attachments else []
            number = int((found.get("version") or {}).get("number") or 0)
            yield _Page(str(found["id"]), str(found.get("title") or ""), number, ancestors,
                        _embedded_restriction(found), attachments)

    def _space_items(self, space: _Space) -> Iterator[tuple[Item, _Entry]]:
        """Each page's item, then its attachments', with the access lists and ids the hierarchy gives."""
        for page in sorted(space.pages.values(), key=lambda p: int(p.id) if p.id.isdigit() else 0):
            acl = self._acl(space, page)
            path = "/".join([_segment(space.key), *(_segment(t) for _, t in page.ancestors), _segment(page.title)])
            read = f";read={_digest(acl)}" if acl is not None else ""
            heading = " > ".join([space.name, *(t for _, t in page.ancestors), page.title])
            yield Item(path + ".html", f"page:{page.version}{read}", 0, acl), _Entry(page.id, page.title, heading)
            attachments = page.attachments
            if attachments is None:
                attachments = list(self._results(f"content/{page.id}/child/attachment",
                                                 {"expand": "version", "limit": self.options.limit, "start": 0},
                                                 f"the attachments of {path}"))
            for found in attachments:
                size = int((found.get("extensions") or {}).get("fileSize") or 0)
                number = int((found.get("version") or {}).get("number") or 0)
                link = str((found.get("_links") or {}).get("download") or "")
                if link:
                    yield (Item(f"{path}/{_segment(str(found.get('title') or found['id']))}",
                                f"attachment:{number}{read}", size, acl), _Entry(str(found["id"]), download=link))

    def _acl(self, space: _Space, page: _Page) -> Acl | None:
        """The page's read restrictions and its ancestors', intersected; None where there are none."""
        levels = [self._restriction(space, page_id) for page_id in [*(a for a, _ in page.ancestors), page.id]]
        levels = [r for r in levels if r.users or r.groups]
        if not levels:
            return None
        users = frozenset.intersection(*(r.users for r in levels))
        groups = frozenset.intersection(*(r.groups for r in levels))
        return {"users": sorted(users), "groups": sorted(groups)}

    def _restriction(self, space: _Space, page_id: str) -> _Restriction:
        """A page's own read restriction: from the listing, else from its restriction endpoint."""
        page = space.pages.get(page_id)
        if page is not None and page.restriction is not None:
            return page.restriction
        if page_id not in self._restrictions:
            users: set[str] = set()
            groups: set[str] = set()
            start, limit = 0, self.options.limit
            for _ in range(_MAX_REQUESTS):
                found = self._get(f"content/{page_id}/restriction/byOperation/read",
                                  {"expand": "restrictions.user,restrictions.group", "start": start, "limit": limit},
                                  f"the restrictions of page {page_id}", listing=True)
                subjects = found.get("restrictions") or {}
                user_results = (subjects.get("user") or {}).get("results") or []
                group_results = (subjects.get("group") or {}).get("results") or []
                users.update(_user(u) for u in user_results)
                groups.update(str(g.get("name") or "") for g in group_results)
                limit = int((subjects.get("user") or {}).get("limit") or limit)  # the server's, where it cut ours
                if max(len(user_results), len(group_results)) < limit:
                    break
                start += limit
            self._restrictions[page_id] = _Restriction(frozenset(users - {""}), frozenset(groups - {""}))
        return self._restrictions[page_id]

    def _results(self, path: str, params: dict[str, Any], what: str) -> Iterator[dict[str, Any]]:
        """Every result of a paged collection: `_links.next` followed, else start advanced while a
        page comes back full."""
        url, query = self._api(path), dict(params)
        seen: set[str] = set()
        for _ in range(_MAX_REQUESTS):
            found = self._get(url, query, what, listing=True)
            results = found.get("results")
            if not isinstance(results, list):
                raise SourceError(f"source {self.name!r}: {what}: the answer is not a Confluence listing; "
                                  "nothing was deleted")
            ids = {str(r.get("id")) for r in results}
            if ids and ids <= seen:
                break  # a page of results already listed: the server is going round in circles
            seen |= ids
            yield from results
            following = (found.get("_links") or {}).get("next")
            if following:
                url, query = self._on_site(str(following)), {}
            elif query and results and len(results) >= int(found.get("limit") or query.get("limit") or 0) > 0:
                query["start"] = int(query.get("start", 0)) + len(results)
            else:
                return
        raise SourceError(f"source {self.name!r}: {what}: the listing does not end; nothing was deleted")

    # Requests.

    def _api(self, path: str) -> str:
        return f"{self.base}/rest/api/{path}"

    def _on_site(self, link: str) -> str:
        """A link the server gave (relative to the site, or absolute), made absolute on this site's
        host whatever host it names: credentials are only ever sent where they were meant for."""
        parts = urlsplit(link)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if self.context and (path == self.context or path.startswith(self.context + "/")):
            return self.origin + path
        return self.base + path

    def _get(self, url: str, params: dict[str, Any] | None, what: str, listing: bool = False) -> dict[str, Any]:
        """A JSON answer; SourceError saying what could not be read (never with a credential in it)."""
        response = self._request(url if url.startswith(("http://", "https://")) else self._api(url), params, what,
                                 listing)
        try:
            found = response.json()
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise SourceError(self._failure(what, "answered with something that is not JSON", listing))
        return found

    def _request(self, url: str, params: dict[str, Any] | None, what: str, listing: bool) -> httpx.Response:
        waited = 0
        while True:
            try:
                response = self._client.get(url, params=params or None)
            except httpx.TimeoutException:
                raise SourceError(self._failure(what, f"did not answer within {self.options.timeout:g} s",
                                                listing)) from None
            except httpx.HTTPError as exc:
                raise SourceError(self._failure(what, f"cannot be reached ({type(exc).__name__})", listing)) from None
            if response.status_code == 429 and waited < _RETRIES:
                waited += 1
                time.sleep(min(_seconds(response.headers.get("Retry-After")), _MAX_WAIT))
                continue
            if response.status_code < 400:
                return response
            raise _Refused(self._failure(what, _status(response.status_code), listing), response.status_code)

    def _download(self, item_id: str, link: str) -> bytes:
        url, limit = self._on_site(link), self.options.max_bytes
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise _Refused(self._failure(item_id, _status(response.status_code), False), response.status_code)
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise SourceError(f"source {self.name!r}: {item_id} is over options.max_bytes ({limit})")
                return bytes(data)
        except httpx.HTTPError as exc:
            raise SourceError(self._failure(item_id, f"cannot be downloaded ({type(exc).__name__})", False)) from None

    def _failure(self, what: str, why: str, listing: bool) -> str:
        text = f"source {self.name!r}: {what}: Confluence at {self.base} {why}"
        if self._token:
            text = text.replace(self._token, "***")
        return text + ("; nothing was deleted" if listing else "")


def _site(url: str, name: str) -> tuple[str, str, str]:
    """The site's base URL (API under it), its origin and context path; Cloud's is /wiki."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"source {name!r}: {url!r} is not a Confluence URL; write "
                          "confluence+https://HOST[/context] (Cloud: confluence+https://SITE.atlassian.net/wiki)")
    if parts.username or parts.password:
        raise ConfigError(f"source {name!r}: give the credentials as environment variable names "
                          "(credentials = {username, token}), not in the URL")
    context = parts.path.rstrip("/").removesuffix("/rest/api").rstrip("/")
    if not context and (parts.hostname or "").endswith(".atlassian.net"):
        context = "/wiki"
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin + context, origin, context


def _status(code: int) -> str:
    if code == 401:
        return "refused the credentials (401): check the user name and token"
    if code == 403:
        return "does not let these credentials read it (403)"
    if code == 429:
        return "still asks to slow down (429)"
    return f"answered {code}"


def _seconds(value: str | None) -> float:
    try:
        return max(float(value or 1), 0.0)
    except ValueError:
        return 1.0


def _embedded(collection: Any) -> list[dict[str, Any]] | None:
    """An expanded collection's results when the listing holds all of them; None: ask for it."""
    if not isinstance(collection, dict) or not isinstance(collection.get("results"), list):
        return None
    results: list[dict[str, Any]] = collection["results"]
    limit = int(collection.get("limit") or 0)
    if (collection.get("_links") or {}).get("next") or (limit and len(results) >= limit):
        return None
    return results


def _embedded_restriction(page: dict[str, Any]) -> _Restriction | None:
    """The page's own read restriction as the listing expanded it; None when it did not (or cut it)."""
    read = ((page.get("restrictions") or {}).get("read") or {}).get("restrictions")
    if not isinstance(read, dict):
        return None
    users, groups = _embedded(read.get("user")), _embedded(read.get("group"))
    if users is None or groups is None:
        return None
    return _Restriction(frozenset(_user(u) for u in users) - {""},
                        frozenset(str(g.get("name") or "") for g in groups) - {""})


def _user(found: dict[str, Any]) -> str:
    """A user as access lists name them: the username (Data Center), else the accountId (Cloud)."""
    return str(found.get("username") or found.get("accountId") or found.get("userKey") or "")


def _segment(title: str) -> str:
    """A title as one part of an item id: no slashes or control characters, not hidden."""
    text = " ".join(_UNSAFE.sub("-", title).split())[:150].strip()
    if text.startswith("."):
        text = "_" + text[1:]
    return text or "untitled"


def _digest(acl: Acl) -> str:
    return hashlib.sha256(repr(acl).encode()).hexdigest()[:12]


def _unique(listed: list[tuple[Item, _Entry]]) -> Iterator[tuple[Item, _Entry]]:
    """The items, those whose ids collide (titles equal once cleaned) told apart by content id."""
    counts: dict[str, int] = {}
    for item, _ in listed:
        counts[item.id] = counts.get(item.id, 0) + 1
    for item, entry in listed:
        if counts[item.id] > 1:
            stem, dot, suffix = item.id.rpartition(".")
            tag = entry.content_id
            renamed = f"{stem}~{tag}.{suffix}" if dot and "/" not in suffix else f"{item.id}~{tag}"
            item = Item(renamed, item.version, item.size, item.acl)
        yield item, entry


def _page_html(title: str, heading: str, body: str) -> str:
    """The page as an HTML file: its hierarchy the <h1>, its own headings one level down."""
    shifted = _HEADING.sub(lambda m: f"<{m.group(1)}h{min(int(m.group(2)) + 1, 6)}", body)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
            f"<body><h1>{html.escape(heading)}</h1>\n<div>{shifted}</div></body></html>\n")
