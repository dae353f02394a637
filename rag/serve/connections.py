"""Deadlines for slow clients and a cap on connections per client address, in the HTTP protocol.

uvicorn has no deadline for reading a request: its keep-alive timeout covers only the idle time
between requests, so a client sending its headers or body a byte at a time (or nothing at all on
a fresh connection) holds a connection, and its share of the server, for as long as it likes.
`LimitedH11Protocol` is uvicorn's h11 protocol with, per connection:

- a header deadline (serve.header_timeout): from the connection's start, and on a kept-alive
  connection from the first byte of each following request, until the request's headers are
  complete. Past it a client that sent part of a request gets 408; one that sent nothing is
  closed without a word (browsers open spare connections they may never use);
- a body deadline (serve.body_timeout, extended like Apache mod_reqtimeout's MinRate by one second
  per serve.body_min_rate_kb received, so a large upload over a decent link is never cut while a
  trickle is): from the end of the headers until the body is complete. Time the server itself
  is not reading (the app has not yet taken what came, or not asked for a body it awaits with
  `Expect: 100-continue`) is not held against the client. Past it the client gets 408 unless the
  response has begun, and the app's request sees a disconnect;
- at most serve.max_connections_per_client open connections per client address in this process;
  one more is answered 429 and closed.

A refused or cut-off connection is closed gently: the answer is written, the server's side shut
(FIN), what the client still sends read and dropped until it closes or LINGER_SECONDS pass, so
that the answer is not lost to a reset. The request a body deadline cuts off carries
`log_fields.cut_off = "serve.body_timeout"` in its scope state, which the access-log line shows.

`rag serve` passes `http=protocol_factory(settings.serve)` to uvicorn: a functools.partial of
the class with a frozen `ConnectionLimits`, which pickles, as `--workers N` needs.
"""

from __future__ import annotations

import asyncio
import functools
import json
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol
from uvicorn.server import ServerState

if TYPE_CHECKING:
    from rag.config import ServeSettings

# How long a refused or cut-off connection is read (and dropped) after the answer, at most.
LINGER_SECONDS = 2.0

# Open connections per client address, per uvicorn server (a process may run several: tests).
_OPEN: weakref.WeakKeyDictionary[ServerState, Counter[str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ConnectionLimits:
    """Seconds, bytes per second and connections; 0 turns a limit off (serve.* in config.toml)."""

    header_timeout: float
    body_timeout: float
    body_min_rate: float
    max_per_client: int

    @classmethod
    def from_settings(cls, serve: ServeSettings) -> ConnectionLimits:
        return cls(header_timeout=serve.header_timeout, body_timeout=serve.body_timeout,
                   body_min_rate=serve.body_min_rate_kb * 1024, max_per_client=serve.max_connections_per_client)


def protocol_factory(serve: ServeSettings) -> functools.partial[LimitedH11Protocol]:
    """What `uvicorn.run(http=...)` takes: the protocol class bound to the settings' limits."""
    return functools.partial(LimitedH11Protocol, limits=ConnectionLimits.from_settings(serve))


def _answer(status: int, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {STATUS_PHRASES[status].decode()}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("latin-1") + body


def _seconds(value: float) -> str:
    return f"{value:g} s"


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and a per-address connection cap."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, limits: ConnectionLimits) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._address: str | None = None  # counted in _OPEN under this address until connection_lost
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._body_cycle: object | None = None  # the request whose body the window below is for
        self._body_start = 0.0
        self._body_received = 0
        self._closing = False  # answered (408, 429) or cut off: input is read and dropped
        self._handed_off = False  # upgraded to WebSocket: another protocol owns the transport

    # Connections per address

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        if address is not None and self.limits.max_per_client:
            counts = _OPEN.setdefault(self.server_state, Counter())
            if counts[address] >= self.limits.max_per_client:
                self.logger.info("%s - 429: this address has the %d open connections "
                                 "serve.max_connections_per_client allows", address, counts[address])
                self._close_gently(_answer(429, (
                    f"this address already has the {counts[address]} open connections to the server that "
                    "serve.max_connections_per_client allows; reuse or close some")))
                return
            counts[address] += 1
            self._address = address
        self._watch()

    def _release(self) -> None:
        if self._address is not None:
            counts = _OPEN.get(self.server_state)
            if counts is not None:
                counts[self._address] -= 1
                if counts[self._address] <= 0:
                    del counts[self._address]
            self._address = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The WebSocket protocol takes the transport over and gets its connection_lost, not us.
        self._handed_off = True
        self._release()
        self._cancel_timers()
        super().handle_websocket_upgrade(event)

    # Reading

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self.conn.their_state is h11.SEND_BODY:
            self._body_received += len(data)
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _watch(self) -> None:
        """(Dis)arms the deadlines for where the request being read is."""
        if self._closing or self._handed_off or self.transport.is_closing():
            self._cancel_timers()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self._cancel_body_timer()
            # A fresh connection has its header deadline from the start; a kept-alive one from the
            # first byte of its next request (idle time between requests is the keep-alive timeout's).
            waiting = self.cycle is None or bool(self.conn.trailing_data[0])
            if not waiting:
                self._cancel_header_timer()
            elif self._header_timer is None and self.limits.header_timeout:
                self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_expired)
        elif state is h11.SEND_BODY:
            self._cancel_header_timer()
            if self._body_cycle is not self.cycle:
                self._body_cycle = self.cycle
                self._body_start, self._body_received = self.loop.time(), 0
                self._cancel_body_timer()
                if self.limits.body_timeout:
                    self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_expired)
        else:
            self._cancel_timers()

    def _header_expired(self) -> None:
        self._header_timer = None
        if self._closing or self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if not self.conn.trailing_data[0]:  # nothing sent: no request to answer
            self.transport.close()
            return
        limit = _seconds(self.limits.header_timeout)
        self.logger.info("%s - 408: request headers not complete within %s (serve.header_timeout)",
                         self._who(), limit)
        self._close_gently(_answer(408, f"the request headers were not complete within {limit} "
                                        "(serve.header_timeout)"))

    def _body_expired(self) -> None:
        self._body_timer = None
        if self._closing or self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        now = self.loop.time()
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # The server is not reading: not the client's doing. A new window from now.
            self._body_start, self._body_received = now, 0
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_expired)
            return
        rate = self.limits.body_min_rate
        deadline = self._body_start + self.limits.body_timeout + (self._body_received / rate if rate else 0.0)
        if now < deadline:
            self._body_timer = self.loop.call_later(deadline - now, self._body_expired)
            return
        rule = f"{_seconds(self.limits.body_timeout)} (serve.body_timeout)" + (
            f" plus 1 s per {rate / 1024:g} KB received (serve.body_min_rate_kb)" if rate else "")
        self.logger.info("%s - 408: request body not complete within %s", self._who(), rule)
        answer = b""
        if cycle is not None:
            if not cycle.response_started:
                answer = _answer(408, f"the request body was not complete within {rule}")
            # The app's next receive() gets http.disconnect; anything it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            state = cycle.scope.get("state")
            if isinstance(state, dict):
                state["log_fields"] = {**state.get("log_fields", {}), "cut_off": "serve.body_timeout"}
        self._close_gently(answer)

    # Closing

    def _close_gently(self, answer: bytes) -> None:
        """Writes `answer`, shuts the sending side and drops what still comes until the client
        closes or LINGER_SECONDS pass, so a client still sending gets the answer, not a reset."""
        self._closing = True
        self._cancel_timers()
        if answer:
            self.transport.write(answer)
        if self.flow is not None:
            self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()

    def _who(self) -> str:
        return "%s:%d" % self.client if self.client else "client"
