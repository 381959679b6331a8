"""OTLP/HTTP: ``POST /v1/logs`` (protobuf or JSON, gzip/deflate or plain), ``GET /healthz``.

HTTP/1.1 itself — parsing, ``Content-Length`` and chunked bodies, keep-alive, pipelined requests, TLS — is
Tornado's ``HTTPServer`` on an event loop of its own thread; this module keeps only the OTLP exchange and the
limits. Why Tornado: it is maintained, pure Python on asyncio (no build step, nothing to vendor), and its HTTP/1.1
connection enforces **deadlines**, not idle timers: the whole header block (from the moment a connection waits
for a request, TLS handshake included) within ``header_timeout_s`` and the whole body within ``body_timeout_s``,
however slowly the bytes trickle in. A connection costs no thread while it waits, and the body of a request is
read only after its headers were accepted and it took one of the ``max_concurrent_requests`` slots.

What a request goes through, each step answered in the request's encoding (OTLP/JSON for ``application/json``,
protobuf otherwise):

1. headers, within the header deadline: the path (404), exactly one ``Authorization: Bearer <token>`` when a token
   is set (401), the content type (415), a declared ``Content-Length`` over the body limit (413);
2. a request slot, or 429 with ``Retry-After``;
3. the body (``Content-Length`` or chunked) within the body deadline, never more than the limit kept (413);
4. :meth:`ExportService.export` on a worker thread: decode, deliver, answer.

A refusal at step 1 or 2 closes the connection without keeping any of the body (see :func:`_answer_and_close`).

Fairness: when ``max_connections`` are open, a new connection closes the oldest one that is not inside a request
(waiting for its headers, or idle between requests) instead of being turned away, so connections that only hold
a place — slow headers, idle keep-alive — never lock out a client that sends a request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import socket
import ssl
import threading
from collections.abc import Awaitable, Coroutine
from functools import partial
from http.client import responses
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status
from tornado import httputil, iostream, netutil
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer

from appevents._threads import start_background_thread
from appevents.bridge._policy import FULL, Grant
from appevents.bridge._service import ExportService, Reply, ReplyKind

__all__ = ["HttpListener"]

_logger = logging.getLogger("appevents.bridge")
_PROTOBUF = ("application/x-protobuf", "application/protobuf")
_JSON = "application/json"
_HEALTH_PATHS = ("/healthz", "/health")
#: Largest header block (request line included).
_MAX_HEADER_BYTES = 64 * 1024
#: Body pieces handed over at a time (chunked or not).
_CHUNK_BYTES = 64 * 1024


class HttpListener:
    """The OTLP/HTTP listener: :meth:`start` binds and serves on a thread of its own; :meth:`stop_accepting` then
    :meth:`close_connections` end it."""

    def __init__(
        self,
        address: tuple[str, int],
        service: ExportService,
        *,
        max_body_bytes: int,
        max_concurrent_requests: int,
        max_connections: int,
        header_timeout_s: float,
        body_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self._header_timeout_s = header_timeout_s
        self._body_timeout_s = body_timeout_s
        self._ssl_context = ssl_context
        host, port = address
        # Bound here, on the caller's thread, so that a port in use fails start() itself.
        self._sockets = netutil.bind_sockets(port, host, backlog=128)
        self.port = int(self._sockets[0].getsockname()[1])
        self._free_slots = max_concurrent_requests
        self._workers = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_concurrent_requests, thread_name_prefix="appevents-bridge-http-worker"
        )
        self._streams: dict[iostream.IOStream, None] = {}  # open connections, oldest first
        self._busy: set[iostream.IOStream] = set()  # connections inside a request (headers accepted)
        self._tasks: set[asyncio.Task[None]] = set()  # answers being worked on (a reference keeps each alive)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: _Server | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    # -- life cycle (any thread) ---------------------------------------------------------------------------------
    def start(self) -> HttpListener:
        self._thread = threading.Thread(target=self._run, name="appevents-bridge-http", daemon=True)
        start_background_thread(self._thread)
        self._ready.wait()
        if self._failed is not None:
            raise self._failed
        return self

    def stop_accepting(self) -> None:
        """Close the listening socket; requests in flight and open connections carry on."""
        if self._loop is not None and self._server is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError, concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(self._stop_server(), self._loop).result(5.0)
        for sock in self._sockets:
            sock.close()

    def close_connections(self, grace_s: float = 2.0) -> None:
        """Let the answers being written finish (up to ``grace_s``), close every connection, end the thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(partial(self._begin_closing, grace_s))
        if self._thread is not None:
            self._thread.join(grace_s + 5.0)
        self._workers.shutdown(wait=False, cancel_futures=True)

    # -- the event loop's thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # start() re-raises it on the caller's thread
            self._failed = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._grace_s = 0.0
        self._server = _Server(
            self,
            ssl_options=self._ssl_context,
            idle_connection_timeout=self._header_timeout_s,  # Tornado's deadline for a whole header block
            body_timeout=self._body_timeout_s,
            # Ours is checked first (413); Tornado's own limit only ends a chunk declared absurdly large (400).
            max_body_size=2 * self.max_body_bytes + _CHUNK_BYTES,
            max_header_size=_MAX_HEADER_BYTES,
            chunk_size=_CHUNK_BYTES,
            decompress_request=False,
        )
        self._server.add_sockets(self._sockets)
        self._ready.set()
        await self._stopping.wait()
        if self._busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self._grace_s)
        self._server.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.close_all_connections(), 2.0)

    async def _stop_server(self) -> None:
        if self._server is not None:
            self._server.stop()

    def _begin_closing(self, grace_s: float) -> None:
        self._grace_s = grace_s
        if self._stopping is not None:
            self._stopping.set()

    # -- connections and slots (the event loop's thread only) ------------------------------------------------------
    def admit(self, stream: iostream.IOStream, open_connections: int) -> bool:
        """Room for a new connection: at the limit, the oldest connection not inside a request is closed for it."""
        for known in [s for s in self._streams if s.closed()]:
            del self._streams[known]
        if open_connections >= self.max_connections:
            victim = next((s for s in self._streams if s not in self._busy), None)
            if victim is None:
                return False  # every connection is inside a request: this one waits for none of them
            del self._streams[victim]
            victim.close()
        self._streams[stream] = None
        return True

    def take_slot(self, stream: iostream.IOStream) -> bool:
        if self._free_slots <= 0:
            return False
        self._free_slots -= 1
        self._busy.add(stream)
        self._idle.clear()
        return True

    def give_slot(self, stream: iostream.IOStream) -> None:
        self._free_slots += 1
        self._busy.discard(stream)
        if not self._busy:
            self._idle.set()

    def run(self, answer: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(answer)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def work(
        self, body: bytearray, *, json_encoded: bool, content_encoding: str, grant: Grant
    ) -> asyncio.Future[Reply]:
        """:meth:`ExportService.export` on a worker thread."""
        assert self._loop is not None
        job = partial(
            self.service.export, body, "http", json_encoded=json_encoded, content_encoding=content_encoding, grant=grant
        )
        return self._loop.run_in_executor(self._workers, job)


class _Server(HTTPServer, httputil.HTTPServerConnectionDelegate):
    """Tornado's server with the connection limit of :meth:`HttpListener.admit`; every request an :class:`_Exchange`."""

    def __init__(self, listener: HttpListener, **settings: Any) -> None:
        self._listener = listener
        super().__init__(self, **settings)

    def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        if not self._listener.admit(stream, len(self._connections)):
            stream.close()
            return
        super().handle_stream(stream, address)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        assert isinstance(request_conn, HTTP1Connection)
        return _Exchange(self._listener, request_conn)


class _Exchange(httputil.HTTPMessageDelegate):
    """One request and its answer."""

    def __init__(self, listener: HttpListener, connection: HTTP1Connection) -> None:
        self._listener = listener
        self._connection = connection
        self._stream = connection.stream
        self._service = listener.service
        self._json = False
        self._content_encoding = ""
        self._body: bytearray | None = None  # set once the request holds a slot: the body is wanted
        self._size = 0
        self._slot = False
        self._answered = False
        self._health = False
        self._too_large = False
        self._grant = FULL

    # -- Tornado's callbacks -----------------------------------------------------------------------------------------
    def headers_received(
        self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        self._json = content_type == _JSON
        path = start_line.path.split("?", 1)[0]
        if path in _HEALTH_PATHS and start_line.method in ("GET", "HEAD"):
            self._health = True  # answered in finish(): an answer before the request is read closes the connection
            return None
        if path != "/v1/logs" or start_line.method != "POST":
            return self._refuse(ReplyKind.NOT_FOUND, "OTLP logs go to POST /v1/logs")
        grant = self._service.authenticate(headers.get_list("Authorization"))
        if grant is None:
            return self._refuse(ReplyKind.UNAUTHORIZED, "exactly one 'Authorization: Bearer <token>' header is needed")
        if not self._json and content_type not in _PROTOBUF:
            return self._refuse(ReplyKind.UNSUPPORTED, f"Content-Type must be {_PROTOBUF[0]} or {_JSON}")
        declared = headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self._listener.max_body_bytes:
            return self._refuse(
                ReplyKind.TOO_LARGE, f"the body is over the limit of {self._listener.max_body_bytes} bytes"
            )
        if not self._listener.take_slot(self._stream):
            return self._refuse(ReplyKind.BUSY, "too many requests at once")
        self._slot = True
        self._grant = grant
        self._content_encoding = headers.get("Content-Encoding", "")
        self._body = bytearray()
        return None

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._body is None:
            return  # a body nobody asked for (a GET's, or one already over the limit): dropped as it comes
        if self._size > self._listener.max_body_bytes:
            # Kept reading (and dropping) to its end, so the client reads the 413 instead of a reset connection;
            # Tornado's own limit (twice ours) ends a body that goes on and on.
            self._body, self._too_large = None, True
            self._release()
            return
        self._body += chunk  # one buffer, handed over as it is (no join, no copy)

    def finish(self) -> None:
        if self._health:
            self._send(200, b"ok\n", {"Content-Type": "text/plain", "Content-Length": "3"})
            return
        if self._too_large:
            message = f"the body is over the limit of {self._listener.max_body_bytes} bytes"
            self._reply(self._service.refuse(ReplyKind.TOO_LARGE, message, "http"))
            return
        if self._body is None or self._answered:
            return
        body, self._body = self._body, None
        self._listener.run(self._export(body))

    def on_connection_close(self) -> None:
        self._body = None
        if not self._answered:
            self._release()  # the client went away before its answer: the slot is free again

    # -- answers ---------------------------------------------------------------------------------------------------
    async def _export(self, body: bytearray) -> None:
        try:
            reply = await self._listener.work(
                body, json_encoded=self._json, content_encoding=self._content_encoding, grant=self._grant
            )
        except Exception:  # the service maps every expected error to a reply: this is a bug, still answered
            _logger.exception("appevents bridge: an OTLP/HTTP request failed unexpectedly")
            reply = Reply(ReplyKind.UNAVAILABLE, "the bridge failed to handle the request")
        finally:
            del body
        if not self._stream.closed():
            self._reply(reply)
        self._release()

    def _refuse(self, kind: ReplyKind, message: str) -> Awaitable[None]:
        """From :meth:`headers_received`: answer ``kind`` without reading the body, then close the connection
        (see :func:`_answer_and_close`)."""
        self._answered = True
        status, headers, body = self._encode(self._service.refuse(kind, message, "http"))
        headers["Connection"] = "close"
        head = f"HTTP/1.1 {status} {responses.get(status, 'Unknown')}\r\n".encode() + b"".join(
            f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items()
        )
        return _answer_and_close(self._connection.detach(), head + b"\r\n" + body, self._listener.max_body_bytes)

    def _reply(self, reply: Reply) -> None:
        """Answer on the connection, which stays open for the next request (the body was read)."""
        status, headers, body = self._encode(reply)
        self._send(status, body, headers)

    def _encode(self, reply: Reply) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of ``reply`` in the request's encoding."""
        message: Message = (
            reply.response if reply.kind is ReplyKind.OK else Status(code=reply.kind.grpc_code, message=reply.message)
        )
        if self._json:
            body = json_format.MessageToJson(message, indent=None).encode()
            content_type = _JSON
        else:
            body = message.SerializeToString()
            content_type = _PROTOBUF[0]
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), "Server": "appevents-bridge"}
        if reply.kind.retryable:
            headers["Retry-After"] = str(math.ceil(self._service.intake.retry_after_s))
        if reply.kind is ReplyKind.UNAUTHORIZED:
            headers["WWW-Authenticate"] = 'Bearer realm="appevents-bridge"'
        return reply.kind.http_status, headers, body

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        if self._answered or self._stream.closed():
            return
        self._answered = True
        self._connection.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", status, responses.get(status, "Unknown")),
            httputil.HTTPHeaders(headers),
            body,
        )
        self._connection.finish()

    def _release(self) -> None:
        if self._slot:
            self._slot = False
            self._listener.give_slot(self._stream)


#: How long, and for how many bytes, a connection refused before its body was read is drained before it closes.
_LINGER_S = 2.0


async def _answer_and_close(stream: iostream.IOStream, answer: bytes, drain_limit: int) -> None:
    """Write ``answer``, end the sending side, and read (dropping it) what the client still sends — up to
    ``drain_limit`` bytes, for at most ``_LINGER_S`` — before closing. Closing with the client's body unread
    would make the kernel reset the connection, and a client still sending would lose the answer with it."""
    try:
        await stream.write(answer)
        stream.socket.shutdown(socket.SHUT_WR)
        drained = 0
        async with asyncio.timeout(_LINGER_S):
            while drained <= drain_limit:
                drained += len(await stream.read_bytes(_CHUNK_BYTES, partial=True))
    except (iostream.StreamClosedError, OSError, TimeoutError):
        pass
    finally:
        stream.close()
