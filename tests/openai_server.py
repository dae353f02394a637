"""A tiny OpenAI-compatible chat-completions server for the tests, on 127.0.0.1.

It answers from a script: `reply` (a text, or a function of the request's body, so that a
rewrite request and an answer request can get different replies), `failures` is a list of status codes to return first (then it
succeeds), `delay` makes it slow, and every request it received is kept for inspection, with
the most it was answering at once (`max_in_flight`) and the client ports it saw (`connections`:
it keeps connections alive, as vLLM does, so a pooling client reuses them).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class ChatServer:
    def __init__(self, reply: str | Callable[[dict[str, Any]], str] = "Lisbon staff get 25 working days [1].") -> None:
        self.reply = reply
        self.failures: list[int] = []
        self.retry_after: str | None = None
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections: set[int] = set()
        self._counting = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                with server._counting:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.connections.add(self.client_address[1])
                try:
                    self._answer()
                finally:
                    with server._counting:
                        server.in_flight -= 1

            def _answer(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if server.delay:
                    time.sleep(server.delay)
                if self.path != "/v1/chat/completions":
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                if server.failures:
                    status = server.failures.pop(0)
                    headers = {"Retry-After": server.retry_after} if server.retry_after else {}
                    return self._json(status, {"error": {"message": f"scripted failure {status}"}}, headers)
                reply = server.reply(body) if callable(server.reply) else server.reply
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")  # no length: the stream ends with the connection
                    self.end_headers()
                    self.close_connection = True
                    for piece in reply.split(" "):
                        event = {"choices": [{"index": 0, "delta": {"content": piece + " "}}]}
                        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                return self._json(200, {
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 42, "completion_tokens": 9},
                })

            def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # the client gave up (the timeout test)
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> "ChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
