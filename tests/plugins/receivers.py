"""Alert receivers for the daemon tests: a real HTTP server on 127.0.0.1 that records every
request (path, headers, body) and can be told to fail or stall for a while."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

ABORTED = 599  # recorded status of a request whose sender hung up before the answer


@dataclass
class Received:
    """One request the receiver got, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records requests; answers 200, or ``fail_status`` while failing, after ``delay`` s."""

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    fail_status: int = 500
    failures_left: int = 0
    fail_until: float = 0.0
    delay: float = 0.0
    retry_after: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail(self, status: int = 500, *, times: int = 0, seconds: float = 0.0,
             retry_after: str | None = None) -> None:
        """Answer ``status`` to the next ``times`` requests and/or for ``seconds``."""
        with self.lock:
            self.fail_status, self.failures_left = status, times
            self.fail_until = time.monotonic() + seconds if seconds else 0.0
            self.retry_after = retry_after

    def recover(self) -> None:
        self.fail(times=0, seconds=0)

    def answer(self) -> int:
        with self.lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return self.fail_status
            if time.monotonic() < self.fail_until:
                return self.fail_status
            return 200

    def record(self, received: Received) -> None:
        with self.lock:
            self.requests.append(received)

    def ok(self, path: str | None = None) -> list[Received]:
        """Requests answered 2xx (on ``path`` if given)."""
        with self.lock:
            return [r for r in self.requests if r.status < 300 and (path is None or r.path == path)]

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 20.0) -> bool:
        """Poll ``predicate`` until true or the deadline: no fixed sleeps in tests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def wait_ok(self, n: int, path: str | None = None, timeout: float = 20.0) -> list[Received]:
        self.wait_for(lambda r: len(r.ok(path)) >= n, timeout)
        return self.ok(path)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if receiver.delay:
                time.sleep(receiver.delay)
            status = receiver.answer()
            reply = b'{"ok": true}' if status < 300 else b'{"error": "failing on purpose"}'
            # Recorded before answering, so a sender that saw the answer always finds the request
            # here; a sender that hangs up before the answer is written turns it into ABORTED.
            received = Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                body, status, time.monotonic())
            receiver.record(received)
            try:
                self.send_response(status)
                if status >= 300 and receiver.retry_after:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                self.wfile.flush()
            except OSError:  # the sender gave up (timeout): it never saw this answer
                received.status = ABORTED
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return None  # a sender that hangs up is part of the tests, not an error


def start_receiver() -> tuple[Receiver, ThreadingHTTPServer, threading.Thread]:
    receiver = Receiver()
    server = QuietServer(("127.0.0.1", 0), _handler(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return receiver, server, thread


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook/apprise receiver on 127.0.0.1 (``receiver.url``), recording every request."""
    rec, server, thread = start_receiver()
    yield rec
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
