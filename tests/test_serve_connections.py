"""Slow clients and many connections against a real `rag serve` (rag.serve.connections): headers
or a body sent a byte at a time get 408 and the connection closed after their deadline, a
connection that sends nothing is closed, a fast large body and a kept-alive connection are left
alone, and one address gets 429 past its connection limit until it closes some. Raw sockets, so
the bytes on the wire are the test's; the deadlines are asserted with wide margins only."""

from __future__ import annotations

import http.client
import json
import pickle
import select
import socket
import time
from urllib.parse import urlsplit

import pytest
import uvicorn

from rag.config import Settings
from rag.errors import ConfigError
from rag.serve.connections import ConnectionLimits, LimitedH11Protocol, protocol_factory
from serving import build_knowledge, running_server

pytestmark = pytest.mark.slow

HEADER_SECONDS = 2
BODY_SECONDS = 2
PER_CLIENT = 4
_ENV = {"RAG_ANSWER_GENERATOR": "extractive", "RAG_SERVE_HEADER_TIMEOUT": str(HEADER_SECONDS),
        "RAG_SERVE_BODY_TIMEOUT": str(BODY_SECONDS), "RAG_SERVE_BODY_MIN_RATE_KB": "1",
        "RAG_SERVE_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT), "PYTHONUNBUFFERED": "1"}
# uvicorn closes a kept-alive connection after this many idle seconds (its default).
KEEP_ALIVE_SECONDS = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("connections")
    with running_server(build_knowledge(root, embedder), root / "server.log", env=_ENV) as served:
        yield served


def _address(server) -> tuple[str, int]:
    url = urlsplit(server.base)
    return url.hostname, url.port


def _connect(server) -> socket.socket:
    return socket.create_connection(_address(server), timeout=10)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def _read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """What arrives until the server closes (True) or `seconds` pass (False)."""
    got, deadline = b"", time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            chunk = _recv(sock)
            if not chunk:
                return got, True
            got += chunk
    return got, False


def _trickle(sock: socket.socket, data: bytes, every: float, give_up: float = 15) -> tuple[bytes, float, bool]:
    """Sends `data` a byte per `every` seconds, as long as the server listens (for `give_up`
    seconds at most); returns what the server answered, the seconds until its first byte (or its
    close), and whether it closed."""
    started, got, first = time.monotonic(), b"", None
    for byte in data:
        if time.monotonic() - started > give_up:
            break
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # the server closed
            break
        if select.select([sock], [], [], every)[0]:
            chunk = _recv(sock)
            first = first or time.monotonic()
            if not chunk:
                return got, first - started, True
            got += chunk
    rest, closed = _read_until_closed(sock, 5)
    first = first or time.monotonic()
    return got + rest, first - started, closed


def _status_and_detail(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), answer
    return int(head.split()[1]), json.loads(body)["detail"]


def _log_after(server, offset: int, wanted: str, seconds: float = 10) -> str:
    """The server's log written after `offset`, once it holds `wanted` (or `seconds` passed)."""
    deadline = time.monotonic() + seconds
    while True:
        text = server.log.read_text()[offset:]
        if wanted in text or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_headers_sent_a_byte_at_a_time_get_408_after_the_header_deadline(server):
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: one byte at a time\r\n\r\n"
    with _connect(server) as sock:
        answer, seconds, closed = _trickle(sock, request, every=0.5)
    assert closed
    status, detail = _status_and_detail(answer)
    assert status == 408 and "serve.header_timeout" in detail
    # The headers would have taken len(request) / 2 = 35 s.
    assert HEADER_SECONDS - 0.5 <= seconds < HEADER_SECONDS + 6, seconds


def test_a_connection_that_sends_nothing_is_closed_after_the_header_deadline(server):
    started = time.monotonic()
    with _connect(server) as sock:
        answer, closed = _read_until_closed(sock, HEADER_SECONDS + 10)
    assert closed and answer == b"", "no request, so no answer: only the close"
    assert HEADER_SECONDS - 0.5 <= time.monotonic() - started < HEADER_SECONDS + 6


def _trickled_body(server, target: str, content_type: str, request_id: str,
                   start: bytes = b"") -> tuple[bytes, float, bool]:
    """A request with a body of 1000 bytes: its headers and `start` at once, the rest a byte at a time."""
    head = (f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: 1000\r\nX-Request-ID: {request_id}\r\n\r\n").encode()
    with _connect(server) as sock:
        sock.sendall(head + start)
        return _trickle(sock, b"x" * (1000 - len(start)), every=0.5)


def test_a_body_sent_a_byte_at_a_time_gets_408_and_the_app_logs_no_error(server):
    offset = len(server.log.read_text())
    answer, seconds, closed = _trickled_body(server, "/v1/search", "application/json", "slow-body-search")
    assert closed
    status, detail = _status_and_detail(answer)
    assert status == 408 and "serve.body_timeout" in detail and "serve.body_min_rate_kb" in detail
    assert BODY_SECONDS - 0.5 <= seconds < BODY_SECONDS + 6, seconds
    log = _log_after(server, offset, "slow-body-search")
    (line,) = [json.loads(x) for x in log.splitlines() if "slow-body-search" in x]
    # FastAPI answers a body cut short 400 (nobody receives it); never a 500 or a traceback.
    assert line["cut_off"] == "serve.body_timeout" and line["status"] != 500, line
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


def test_an_upload_cut_off_by_the_body_deadline_logs_no_error(server):
    offset = len(server.log.read_text())
    part = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="slow.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n")
    answer, _, closed = _trickled_body(server, "/v1/documents", "multipart/form-data; boundary=b", "slow-upload",
                                       start=part)
    assert closed and _status_and_detail(answer)[0] == 408
    log = _log_after(server, offset, "slow-upload")
    (line,) = [json.loads(x) for x in log.splitlines() if "slow-upload" in x]
    assert line["status"] != 500, line
    assert "Traceback" not in log, log


def test_a_large_body_at_a_decent_rate_is_never_cut_off(server):
    # 4 MB in 16 pieces, 0.2 s apart: twice the body deadline, but far above the minimum rate.
    body = b'{"question": "How many days of annual leave?", "k": 3}' + b" " * (4 * 2**20)
    pieces = [body[i:i + 2**18] for i in range(0, len(body), 2**18)]
    started = time.monotonic()
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.2)
        answer, closed = _read_until_closed(sock, 60)
    assert time.monotonic() - started > BODY_SECONDS + 1, "the upload outlasted the plain body deadline"
    head, _, content = answer.partition(b"\r\n\r\n")
    assert closed and head.startswith(b"HTTP/1.1 200"), answer[:500]
    assert json.loads(content)["hits"][0]["doc_id"] == "leave.md"


def test_a_kept_alive_connection_may_idle_past_the_header_deadline_between_requests(server):
    conn = http.client.HTTPConnection(*_address(server), timeout=10)
    try:
        conn.request("GET", "/healthz")
        first = conn.getresponse()
        assert first.status == 200 and first.read()
        sock = conn.sock
        time.sleep(HEADER_SECONDS + 1)  # idle: within the keep-alive timeout, past the header deadline
        assert HEADER_SECONDS + 1 < KEEP_ALIVE_SECONDS
        conn.request("POST", "/v1/search", body=json.dumps({"question": "annual leave"}),
                     headers={"Content-Type": "application/json"})
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read())["hits"]
        assert conn.sock is sock, "both requests went over the one connection"
    finally:
        conn.close()


def _kept_alive(server) -> http.client.HTTPConnection | None:
    """A connection that has served one request and stays open; None when refused (429)."""
    conn = http.client.HTTPConnection(*_address(server), timeout=10)
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    response.read()
    if response.status == 429:
        conn.close()
        return None
    assert response.status == 200
    return conn


def _refused(server) -> str:
    """Opens one connection more, which must be answered 429 and closed: the detail."""
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer, closed = _read_until_closed(sock, 10)
    assert closed
    status, detail = _status_and_detail(answer)
    assert status == 429, answer
    return detail


def _fill(server, wanted: int, opened: list[http.client.HTTPConnection]) -> None:
    """Opens connections until `opened` holds `wanted`; waits (briefly) for closed ones the
    server has not yet seen go."""
    deadline = time.monotonic() + 10
    while len(opened) < wanted:
        conn = _kept_alive(server)
        if conn is None:
            assert time.monotonic() < deadline, "connections closed by the client were never released"
            time.sleep(0.2)
        else:
            opened.append(conn)


def test_one_address_gets_429_past_its_connection_limit_until_it_closes_some(server):
    opened: list[http.client.HTTPConnection] = []
    try:
        _fill(server, PER_CLIENT, opened)
        assert "serve.max_connections_per_client" in _refused(server)
        # The connections within the limit still work...
        for conn in opened:
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b'{"status":"alive"}'
        # ...and closing two makes room for exactly two (the refused one never counted).
        for conn in opened[:2]:
            conn.close()
        del opened[:2]
        _fill(server, PER_CLIENT, opened)
        _refused(server)
    finally:
        for conn in opened:
            conn.close()


@pytest.mark.parametrize("environ, words", [
    ({"RAG_SERVE_HEADER_TIMEOUT": "-1"}, ["serve.header_timeout", "greater than or equal to 0"]),
    ({"RAG_SERVE_BODY_TIMEOUT": "forever"}, ["serve.body_timeout", "number"]),
    ({"RAG_SERVE_BODY_MIN_RATE_KB": "-0.5"}, ["serve.body_min_rate_kb", "greater than or equal to 0"]),
    ({"RAG_SERVE_MAX_CONNECTIONS_PER_CLIENT": "2.5"}, ["serve.max_connections_per_client", "integer"]),
    ({"RAG_SERVE_MAX_CONNECTIONS_PER_CLIENT": "-1"}, ["serve.max_connections_per_client", "RAG_SERVE_MAX"]),
])
def test_bad_connection_settings_name_the_key(environ, words):
    with pytest.raises(ConfigError) as info:
        Settings.load(environ=environ)
    for word in words:
        assert word in str(info.value)


def test_the_limits_come_from_the_settings_and_pickle_for_worker_processes():
    defaults = ConnectionLimits.from_settings(Settings.load(environ={}).serve)
    assert defaults == ConnectionLimits(header_timeout=10, body_timeout=20, body_min_rate=32 * 1024,
                                        max_per_client=64)
    assert defaults.max_per_client >= 6, "a browser opens up to 6 connections to one server"
    off = Settings.load(environ={"RAG_SERVE_MAX_CONNECTIONS_PER_CLIENT": "0", "RAG_SERVE_HEADER_TIMEOUT": "0"})
    assert ConnectionLimits.from_settings(off.serve).max_per_client == 0
    http = protocol_factory(Settings.load(environ={"RAG_SERVE_BODY_MIN_RATE_KB": "8"}).serve)
    # `rag serve --workers N` hands uvicorn's config, `http=` included, to spawned processes.
    copy = pickle.loads(pickle.dumps(http))
    assert copy.func is LimitedH11Protocol and copy.keywords == {"limits": http.keywords["limits"]}
    assert copy.keywords["limits"].body_min_rate == 8192
    config = uvicorn.Config(lambda scope, receive, send: None, http=copy)
    config.load()
    assert config.http_protocol_class is copy
