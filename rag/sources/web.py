"""An intranet site as a source: its pages from a sitemap (`options.sitemap`, else those robots.txt
names, else /sitemap.xml when there is one) or by following links from the start URL, and the files
(PDF, Office, ...) its pages link to.

- Same host only (scheme, host and port); redirects are followed only there. robots.txt is obeyed
  for the user agent "rag" (Disallow, Allow, Crawl-delay): a disallowed URL is never requested, and
  one that disallows the start URL fails the run. `<meta name="robots">` noindex and nofollow too.
- `options.max_depth` (3): links from the start page to a page or file. With a sitemap, its pages
  are the listing and only the files they link to are added.
- `options.max_pages` (1000): URLs (pages and files) one run may request. A site with more fails
  the run (SourceError): the listing would be incomplete and a sync would delete every page past
  the limit, so nothing is added or deleted until the limit is raised.
- Ids: the URL's path, a page's ending in .html (`/docs/intro` -> `docs/intro.html`, a folder ->
  `index.html`), a file's in its suffix (guessed from its Content-Type when it has none).
- Versions: the ETag, else Last-Modified with the size, else a SHA-256 of the body. Pages are read
  while listing (for their links) and kept in a temporary folder for fetch(); files get a HEAD,
  and fetch() downloads them, so an unchanged PDF is never read again.
- Failing the run, deleting nothing: an unreachable host, a timeout, a 5xx or 429 from any URL, a
  401, a start URL or given sitemap that is missing. A linked page that is gone (another 4xx, a
  redirect off the host) is left out, so its document goes.
- `credentials = {username = "ENV", password = "ENV"}` (basic auth), `options.verify` (false or a
  CA bundle's path), `options.timeout` (30 s), `options.max_bytes` (100 MiB a page or file).
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import posixpath
import ssl
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import httpx
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.errors import ConfigError
from rag.sources.base import Item, SourceError
from rag.sources.settings import SourceSettings

log = logging.getLogger(__name__)

AGENT = "rag"
_PAGE_TYPES = {"text/html", "application/xhtml+xml"}
_PAGE_SUFFIXES = {"", ".html", ".htm"}  # asked for with GET at once; other URLs first with HEAD
_REDIRECTS = 5
_CHUNK = 1 << 16
_SITEMAPS = 50  # sitemap files read at most (a sitemap index and the sitemaps it names)
_FAILS = {401: "refused the credentials", 407: "needs proxy credentials", 429: "asks to slow down"}


class WebOptions(BaseModel):
    """The `options` a web source reads; another one is a typo, named in the error."""

    model_config = ConfigDict(extra="forbid")

    sitemap: str = ""
    max_depth: int = Field(3, ge=0)
    max_pages: int = Field(1000, ge=1)
    max_bytes: int = Field(100 * 2**20, ge=1)
    timeout: float = Field(30.0, gt=0)
    verify: bool | str = True


@dataclass
class _Found:
    """A listed URL: its item, and the page's copy read while listing (fetch() needs no request)."""

    url: str
    item: Item
    copy: Path | None = None
    error: str = ""  # why fetch() cannot read it


@dataclass
class _Links:
    """lxml parser target gathering a page's links, its <base href> and <meta name="robots">."""

    hrefs: list[str] = field(default_factory=list)
    base: str = ""
    robots: str = ""

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag in ("a", "area") and attrib.get("href"):
            self.hrefs.append(attrib["href"].strip())
        elif tag == "base" and not self.base and attrib.get("href"):
            self.base = attrib["href"].strip()
        elif tag == "meta" and (attrib.get("name") or "").lower() in ("robots", AGENT):
            self.robots += "," + (attrib.get("content") or "").lower()

    def close(self) -> None:  # lxml calls it at the end
        return None


class WebSource:
    """The pages of one intranet site and the files they link to, read over HTTP(S)."""

    def __init__(self, declared: SourceSettings) -> None:
        self.name = declared.name
        try:
            self.options = WebOptions.model_validate(declared.options)
        except ValidationError as exc:
            problems = "; ".join(f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"source {self.name!r}: {problems}") from None
        secrets = declared.secrets()
        if set(secrets) - {"username", "password"} or len(secrets) == 1:
            raise ConfigError(f"source {self.name!r}: a web source's credentials are username and password")
        start = _normal(declared.url)
        if start is None:
            raise SourceError(f"source {self.name!r}: {declared.url!r} is not an http(s) URL")
        self.start, self.origin, verify = start, _origin(start), self.options.verify
        self._client = httpx.Client(
            auth=(secrets["username"], secrets["password"]) if secrets else None, follow_redirects=False,
            timeout=httpx.Timeout(self.options.timeout, connect=min(10.0, self.options.timeout)),
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
            headers={"User-Agent": AGENT})
        self._robots, self._delay, self._last = RobotFileParser(), 0.0, 0.0
        self._found: dict[str, _Found] = {}  # item id -> what the last listing found
        self._seen: set[str] = set()  # URLs the last listing requested or queued
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def items(self) -> Iterator[Item]:
        """Every page and linked file the site holds now; SourceError when the crawl cannot finish."""
        self._crawl()
        for found in list(self._found.values()):
            yield found.item

    def fetch(self, item: Item) -> bytes:
        found = self._found.get(item.id)
        if found is None:
            raise SourceError(f"source {self.name!r}: {item.id} was not listed by this run")
        if found.error:
            raise SourceError(f"source {self.name!r}: {found.url} {found.error}")
        if found.copy is not None:
            return found.copy.read_bytes()
        response = self._request("GET", found.url, required=True)
        assert response is not None  # a required URL raises rather than being left out
        copy, _, _ = self._save(response, None)
        if copy is None:
            raise SourceError(f"source {self.name!r}: {found.url} is over options.max_bytes ({self.options.max_bytes})")
        try:
            return copy.read_bytes()
        finally:
            copy.unlink(missing_ok=True)

    def close(self) -> None:
        self._client.close()
        self._clear()

    def _clear(self) -> None:
        self._found, folder, self._folder = {}, self._folder, None
        if folder is not None:
            folder.cleanup()

    def _crawl(self) -> None:
        """Breadth first from the start URL (or the sitemap's pages): each URL once, robots.txt,
        the host, the depth and the page limit obeyed."""
        self._clear()
        self._folder = tempfile.TemporaryDirectory(prefix="rag-web-")
        self._read_robots()
        if not self._allowed(self.start):
            raise SourceError(f"source {self.name!r}: robots.txt disallows {self.start}; nothing was deleted")
        sitemap = self._sitemap_pages()
        # (url, depth, whether a page found there is listed): a sitemap lists the pages itself.
        queue = deque([(u, 0, True) for u in sitemap] if sitemap is not None else [(self.start, 0, True)])
        self._seen, visited = {u for u, _, _ in queue}, 0
        while queue:
            url, depth, pages = queue.popleft()
            if visited >= self.options.max_pages:
                raise SourceError(f"source {self.name!r}: more than options.max_pages ({self.options.max_pages}) "
                                  f"pages and files within options.max_depth ({self.options.max_depth}); the listing "
                                  "would be incomplete, so nothing was added or deleted: raise max_pages")
            visited += 1
            for link in self._visit(url, depth, pages, required=sitemap is None and url == self.start):
                if link in self._seen or not self._allowed(link):
                    continue
                if sitemap is not None and _suffix(link) in _PAGE_SUFFIXES:
                    continue  # a page the sitemap does not list is not one of the site's pages
                self._seen.add(link)
                queue.append((link, depth + 1, sitemap is None))

    def _visit(self, url: str, depth: int, pages: bool, required: bool) -> list[str]:
        """Lists one URL (a page read, a file's headers asked for); returns the links to follow."""
        response = self._probe(url, required)
        if response is None:
            return []
        final, page = str(response.url), _is_page(response)
        item_id = _item_id(final, page, response.headers.get("content-type", ""))
        if item_id in self._found or (page and not pages):
            response.close()
            return []
        size, version = _length(response), _version(response.headers, _length(response))
        if not page and version:  # a file whose headers say enough: downloaded by fetch() if it changed
            response.close()
            self._found[item_id] = _Found(final, Item(item_id, version, size))
            return []
        if response.request.method == "HEAD":  # a file with neither ETag nor Last-Modified: hash it
            response.close()
            response = self._request("GET", final, required)
            if response is None:
                return []
        links = _Links()
        copy, sha256, size = self._save(response, links if page else None)
        version = _version(response.headers, size) or (f"sha256:{sha256}" if copy else f"over:{size}")
        if copy is None:  # over max_bytes: listed, and reported as failed when read
            self._found[item_id] = _Found(final, Item(item_id, version, size),
                                          error=f"is over options.max_bytes ({self.options.max_bytes})")
            return []
        if "noindex" not in links.robots:
            self._found[item_id] = _Found(final, Item(item_id, version, size), copy)
        if "nofollow" in links.robots or depth >= self.options.max_depth:
            return []
        base = urljoin(final, links.base) if links.base else final
        return [u for u in (_normal(urljoin(base, h)) for h in links.hrefs) if u and _origin(u) == self.origin]

    def _probe(self, url: str, required: bool) -> httpx.Response | None:
        """The response that tells what a URL is: GET for a page, HEAD for what looks like a file
        (and GET after it when the HEAD says it is a page after all)."""
        response = self._request("GET" if _suffix(url) in _PAGE_SUFFIXES else "HEAD", url, required)
        if response is not None and response.request.method == "HEAD" and _is_page(response):
            response.close()
            return self._request("GET", str(response.url), required)
        return response

    def _request(self, method: str, url: str, required: bool = False) -> httpx.Response | None:
        """A streamed 2xx response (the caller closes it), redirects followed on this host only;
        None for a URL that is gone, SourceError where the listing cannot be complete."""
        for _ in range(_REDIRECTS + 1):
            response = self._send(method, url)
            status = response.status_code
            if response.is_redirect:
                response.close()
                target = _normal(urljoin(url, response.headers.get("location", "")))
                if target is None or _origin(target) != self.origin or not self._allowed(target):
                    return self._gone(url, f"redirects to {target or 'another kind of URL'}", required)
                if target in self._seen and not required:
                    return None  # to a URL this listing has (or will have) read itself
                url = target
                self._seen.add(target)
            elif method == "HEAD" and status in (405, 501):  # a server that does not answer HEAD
                response.close()
                method = "GET"
            elif status < 300:
                return response
            else:
                response.close()
                if status >= 500 or status in _FAILS:
                    reason = _FAILS.get(status, f"answered {status}")
                    raise SourceError(f"source {self.name!r}: {url} {reason}; the listing would be incomplete, "
                                      "nothing was deleted")
                return self._gone(url, f"answered {status}", required)
        return self._gone(url, f"redirects more than {_REDIRECTS} times", required)

    def _gone(self, url: str, why: str, required: bool) -> None:
        if required:
            raise SourceError(f"source {self.name!r}: {url} {why}; nothing was deleted")
        log.info("source %s: %s %s: left out", self.name, url, why)
        return None

    def _send(self, method: str, url: str) -> httpx.Response:
        """One request, after robots.txt's crawl delay; an unreachable host is a SourceError."""
        wait = self._last + self._delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            return self._client.send(self._client.build_request(method, url), stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise SourceError(f"source {self.name!r}: cannot reach {url} ({type(exc).__name__}: {exc}); "
                              "nothing was deleted") from None
        finally:
            self._last = time.monotonic()

    def _save(self, response: httpx.Response, links: _Links | None) -> tuple[Path | None, str, int]:
        """The body streamed to the temporary folder, hashed, and parsed for `links` as it comes:
        the copy (None when over max_bytes), its SHA-256 and its size."""
        folder = Path(self._folder.name if self._folder is not None else tempfile.gettempdir())
        parser = etree.HTMLParser(target=links, recover=True, no_network=True) if links is not None else None
        digest, size, copy = hashlib.sha256(), 0, folder / f"rag-web-{uuid.uuid4().hex}"
        try:
            with copy.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > self.options.max_bytes:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    parser = _feed(parser, chunk)
        except httpx.HTTPError as exc:
            copy.unlink(missing_ok=True)
            raise SourceError(f"source {self.name!r}: reading {response.url} failed ({type(exc).__name__}: {exc}); "
                              "nothing was deleted") from None
        finally:
            response.close()
        _feed(parser, None)
        if size > self.options.max_bytes:
            copy.unlink(missing_ok=True)
            return None, "", size
        return copy, digest.hexdigest(), size

    def _read_robots(self) -> None:
        """robots.txt for AGENT, as RFC 9309 reads it: none (a 4xx, or a redirect) allows everything,
        and a 5xx fails the run (what may be read is unknown)."""
        url = self.origin + "/robots.txt"
        self._robots, self._delay = RobotFileParser(url), 0.0
        response = self._send("GET", url)
        try:
            if response.status_code in _FAILS or response.status_code >= 500:
                raise SourceError(f"source {self.name!r}: {url} {_FAILS.get(response.status_code, 'answered')} "
                                  f"({response.status_code}); nothing was deleted")
            if response.status_code >= 300:
                self._robots.allow_all = True
            else:
                self._robots.parse(_read(response, 512 * 1024).decode("utf-8", "replace").splitlines())
        finally:
            response.close()
        rate = self._robots.request_rate(AGENT)
        self._delay = float(self._robots.crawl_delay(AGENT) or (rate.seconds / rate.requests if rate else 0))

    def _allowed(self, url: str) -> bool:
        return self._robots.can_fetch(AGENT, url)

    def _sitemap_pages(self) -> list[str] | None:
        """The page URLs of the site's sitemap on this host; None when it has none (crawl then)."""
        given = self.options.sitemap
        named = [u for u in (self._robots.site_maps() or []) if _origin(u) == self.origin]
        queue = deque([urljoin(self.start, given)] if given else named or [self.origin + "/sitemap.xml"])
        pages: list[str] = []
        read: set[str] = set()
        while queue and len(read) < _SITEMAPS:
            url = queue.popleft()
            normal = _normal(url)
            if normal is None or normal in read or _origin(normal) != self.origin or not self._allowed(normal):
                continue
            read.add(normal)
            response = self._request("GET", normal, required=bool(given))
            if response is None:
                continue
            try:
                kind, locs = _sitemap(_read(response, self.options.max_bytes))
            except ValueError as exc:
                if given:
                    raise SourceError(f"source {self.name!r}: {normal} is not a sitemap ({exc})") from None
                log.info("source %s: %s is not a sitemap (%s): crawling from %s", self.name, normal, exc, self.start)
                continue
            (queue.extend if kind == "sitemapindex" else pages.extend)(locs)
        listed = (_normal(u) for u in pages)
        return list(dict.fromkeys(u for u in listed if u and _origin(u) == self.origin and self._allowed(u))) \
            if pages or given else None


def _feed(parser: etree.HTMLParser | None, chunk: bytes | None) -> etree.HTMLParser | None:
    """Feeds a chunk to the link parser (None: the end); a parser that gives up is dropped."""
    if parser is None:
        return None
    try:
        parser.feed(chunk) if chunk is not None else parser.close()
        return parser
    except etree.LxmlError:
        return None


def _read(response: httpx.Response, limit: int) -> bytes:
    """A body of at most `limit` bytes (more is a SourceError)."""
    data = bytearray()
    for chunk in response.iter_bytes(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise SourceError(f"{response.url} is over options.max_bytes ({limit})")
    return bytes(data)


def _sitemap(data: bytes) -> tuple[str, list[str]]:
    """A sitemap's kind (urlset or sitemapindex) and its <loc> URLs; ValueError when not one."""
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False))
    except etree.LxmlError as exc:
        raise ValueError(str(exc)) from None
    kind = etree.QName(root).localname
    if kind not in ("urlset", "sitemapindex"):
        raise ValueError(f"its root is <{kind}>")
    locs = [(e.text or "").strip() for e in root.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "loc"]
    return kind, [u for u in locs if u]


def _normal(url: str) -> str | None:
    """An http(s) URL without its fragment, scheme and host lower case, the path's dot segments
    resolved; None for another kind (mailto:, javascript:, ...)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    path = parts.path or "/"
    resolved = posixpath.normpath(path)
    resolved = "/" + resolved.lstrip("/") + ("/" if path.endswith("/") and resolved != "/" else "")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), resolved, parts.query, ""))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _suffix(url: str) -> str:
    return PurePosixPath(urlsplit(url).path).suffix.lower()


def _is_page(response: httpx.Response) -> bool:
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in _PAGE_TYPES if kind else _suffix(str(response.url)) in _PAGE_SUFFIXES


def _length(response: httpx.Response) -> int:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else 0


def _version(headers: httpx.Headers, size: int) -> str:
    """What the server says identifies the bytes: the ETag, else Last-Modified with the size."""
    if headers.get("etag"):
        return "etag:" + headers["etag"]
    if headers.get("last-modified"):
        return f"modified:{headers['last-modified']}:size:{size}"
    return ""


def _item_id(url: str, page: bool, content_type: str) -> str:
    """The item's id: the URL's path below the host, a page's ending in .html, a file's in its
    suffix (one guessed from its Content-Type when it has none)."""
    parts = urlsplit(url)
    path = unquote(parts.path).lstrip("/")
    if not path or path.endswith("/"):
        path += "index.html" if page else "index"
    suffix = PurePosixPath(path).suffix.lower()
    if page:
        suffix = suffix if suffix in (".html", ".htm") and not parts.query else ".html"
    elif not suffix:
        suffix = mimetypes.guess_extension(content_type.split(";")[0].strip().lower()) or ""
    query = "?" + parts.query if parts.query else ""
    return path + query + ("" if path.lower().endswith(suffix) and not query else suffix)
