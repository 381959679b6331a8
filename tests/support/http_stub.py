"""The skeleton of the tests' loopback HTTP servers (the endpoint behind a Dapr ``bindings.http`` component, the
sidecar's HTTP face, Segment's tracking API, the OAuth2 token endpoint): a subclass says what it answers in
:meth:`HttpStub.answer`; serving is here once.

The server listens on ``127.0.0.1`` at a free port (or a given one) from construction, so its URL is known before
:meth:`HttpStub.start`; each request is answered on a thread of its own, over HTTP/1.1 keep-alive, with Nagle's
algorithm off (else every small answer waits ~40 ms for a delayed ACK on loopback). :meth:`HttpStub.record` keeps
what a subclass wants to remember of a request, and wakes :meth:`HttpStub.wait_for_records`.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Generic, Self, TypeVar

__all__ = ["HttpStub", "StubReply", "StubRequest"]

Record = TypeVar("Record")


@dataclass(frozen=True)
class StubRequest:
    """One request as it arrived."""

    method: str
    #: As sent, query string included.
    path: str
    #: As sent (a header sent twice: its last value).
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name``, whatever its case."""
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)

    def form(self) -> dict[str, str]:
        """The body as an ``application/x-www-form-urlencoded`` form."""
        return dict(urllib.parse.parse_qsl(self.body.decode()))


@dataclass(frozen=True)
class StubReply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, payload: object) -> StubReply:
        return cls(status, json.dumps(payload).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 resets connections when many calls arrive at once


class HttpStub(Generic[Record]):
    """A threaded HTTP/1.1 server on ``127.0.0.1`` that hands each request to :meth:`answer`."""

    #: The methods answered; any other gets 501, as from :mod:`http.server`.
    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Condition()  # reentrant: a subclass may record while holding it
        self._records: list[Record] = []
        self._server = _Server(("127.0.0.1", port), self._handler_class())
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, request: StubRequest) -> StubReply:
        """The reply to ``request``; runs on the request's own thread."""
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> Self:
        name = type(self).__name__
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port (requests still being answered finish on their daemon threads)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- recording -------------------------------------------------------------------------------------------------
    def record(self, item: Record) -> None:
        with self._lock:
            self._records.append(item)
            self._lock.notify_all()

    @property
    def records(self) -> list[Record]:
        """What was recorded, in order (a copy)."""
        with self._lock:
            return list(self._records)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``condition`` (checked under the stub's lock, again after each record) holds."""
        with self._lock:
            return self._lock.wait_for(condition, timeout)

    def wait_for_records(self, count: int, timeout: float = 10.0) -> bool:
        return self.wait_for(lambda: len(self._records) >= count, timeout)

    # -- HTTP ------------------------------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            wbufsize = -1  # headers and body leave in one write

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_request(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = stub.answer(StubRequest(self.command, self.path, dict(self.headers.items()), body))
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                self.wfile.flush()

        for method in self.methods:
            setattr(Handler, f"do_{method}", Handler.handle_request)
        return Handler
