"""The model queue that keeps concurrent requests from running a model twice at once, and the
names uploads are stored under."""

from __future__ import annotations

import threading
import time

import pytest

from rag.serve.batching import ModelQueue, QueueFull
from rag.serve.jobs import safe_upload_name


def test_waiting_requests_of_equal_key_share_one_batch_and_others_wait_their_turn():
    calls: list[tuple[object, list[str]]] = []
    gate = threading.Event()

    def run(key, items):
        gate.wait(10)
        calls.append((key, list(items)))
        return [f"{key}:{item}" for item in items]

    queue = ModelQueue("test", run, max_batch=3, max_waiting=10)
    try:
        first = queue.submit("a", "0")  # taken at once; the rest wait behind it
        time.sleep(0.1)
        futures = [queue.submit(key, str(i)) for i, key in enumerate("aabaa", start=1)]
        gate.set()
        assert first.result(10) == "a:0"
        assert [f.result(10) for f in futures] == ["a:1", "a:2", "b:3", "a:4", "a:5"]
        assert calls == [("a", ["0"]), ("a", ["1", "2", "4"]), ("b", ["3"]), ("a", ["5"])]
    finally:
        queue.close()


def test_a_full_queue_refuses_with_a_retry_time_and_one_bad_item_fails_alone():
    gate = threading.Event()

    def run(key, items):
        gate.wait(10)
        if "bad" in items:
            raise ValueError("bad item")
        return items

    queue = ModelQueue("test", run, max_batch=8, max_waiting=2)
    try:
        busy = queue.submit("k", "busy")
        time.sleep(0.1)
        good, bad = queue.submit("k", "good"), queue.submit("k", "bad")
        with pytest.raises(QueueFull, match="2 requests already wait"):
            queue.submit("k", "one too many")
        assert queue.retry_after() >= 1
        gate.set()
        assert busy.result(10) == "busy" and good.result(10) == "good"
        with pytest.raises(ValueError, match="bad item"):
            bad.result(10)
        assert queue.submit_call(lambda: "alone").result(10) == "alone"
    finally:
        queue.close()


def test_a_queue_with_concurrency_runs_that_many_items_at_once_streams_included_and_counts_the_rest_waiting():
    gate = threading.Event()
    lock = threading.Lock()
    running, most, batches = 0, 0, []

    def hold(count: int) -> None:
        nonlocal running, most
        with lock:
            running += count
            most = max(most, running)
        gate.wait(10)
        with lock:
            running -= count

    def run(key, items):
        batches.append(list(items))
        hold(len(items))
        return items

    queue = ModelQueue("remote", run, max_batch=2, max_waiting=20, concurrency=3)
    try:
        futures = [queue.submit("k", i) for i in range(6)] + [queue.submit_call(lambda: hold(1) or "stream")]
        deadline = time.monotonic() + 5
        while queue.running < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # no fourth item may start
        assert (queue.running, queue.waiting, most) == (3, 4, 3)
        gate.set()
        assert [f.result(10) for f in futures] == [0, 1, 2, 3, 4, 5, "stream"]
        assert most == 3 and all(len(batch) <= 2 for batch in batches), "equal keys still share batches"
        assert (queue.running, queue.waiting) == (0, 0)
    finally:
        queue.close()


@pytest.mark.parametrize("sent, stored", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd.txt", "passwd.txt"),
    ("C:\\Users\\ana\\notes.md", "notes.md"),
    ("..hidden.md", "hidden.md"),
    ("a\x00b\nc.txt", "abc.txt"),
    ("what?<now>.md", "what__now_.md"),
    ("/", ""),
])
def test_upload_names_cannot_leave_their_folder_or_hide(sent, stored):
    assert safe_upload_name(sent) == stored
    assert safe_upload_name("x" * 300 + ".docx").endswith(".docx") and len(safe_upload_name("x" * 300 + ".docx")) == 200


def test_a_request_that_waits_past_serve_timeout_is_answered_504(make_settings):
    import asyncio

    from rag.serve.errors import TimedOut
    from rag.serve.handlers import http_error
    from rag.serve.service import Service

    service = Service(make_settings(**{"serve.timeout": 0.2}), open_access=True)
    slow = ModelQueue("slow", lambda key, items: time.sleep(2) or items, max_batch=1, max_waiting=4)
    try:
        with pytest.raises(TimedOut) as refused:  # the service's own error, which the app answers 504
            asyncio.run(service._wait(slow, lambda q: q.submit("k", "x")))
        answered = http_error(refused.value)
        assert answered.status_code == 504 and "serve.timeout (0.2 s)" in answered.detail
    finally:
        slow.close()
        service.close()
