"""The service's own errors: what a request meets when the server cannot serve it now. They
know nothing of HTTP; rag.serve.handlers answers them (503 with Retry-After, 504)."""

from __future__ import annotations

from rag.errors import RagError


class Busy(RagError):
    """No room for the request now (a full queue, other writes ahead); worth retrying after
    `retry_after` seconds. Nothing of it was done."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TimedOut(RagError):
    """No result within serve.timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no result within serve.timeout ({seconds:g} s); try again later or with a smaller k")
        self.seconds = seconds
