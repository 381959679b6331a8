"""OTLP/HTTP: ``POST /v1/logs`` (protobuf or JSON, gzip/deflate or plain), ``GET /healthz``.

A standard-library threaded server, HTTP/1.1 keep-alive, TLS when configured. What it reads is bounded before it is
read: the ``Authorization`` header is checked first, then ``Content-Length`` against the body limit (a longer body
is answered 413 and the connection closed unread); open connections and requests worked on at once are capped.
Answers follow the OTLP/HTTP specification: the response (or a ``google.rpc.Status``) in the request's encoding,
``Retry-After`` on 429 and 503.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status

from appevents.bridge._decode import BadRequest, TooLarge, decompress, parse_request
from appevents.bridge._service import ExportService, Reply, ReplyKind

__all__ = ["HttpListener"]

_logger = logging.getLogger("appevents.bridge")
_PROTOBUF = ("application/x-protobuf", "application/protobuf")
_JSON = "application/json"


class HttpListener(ThreadingHTTPServer):
    """The OTLP/HTTP listener; :meth:`serve_forever` on a thread of its own, :meth:`stop` to close it."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        service: ExportService,
        *,
        max_body_bytes: int,
        max_concurrent_requests: int,
        max_connections: int,
        idle_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.ssl_context = ssl_context
        self.slots = threading.BoundedSemaphore(max_concurrent_requests)
        self._connection_slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> HttpListener:
        self._thread = threading.Thread(target=self.serve_forever, name="appevents-bridge-http", daemon=True)
        self._thread.start()
        return self

    def stop_accepting(self) -> None:
        """Close the listening socket; requests in flight carry on."""
        if self._thread is not None:
            self.shutdown()  # ends serve_forever
            self._thread.join()
        self.server_close()

    def close_connections(self) -> None:
        """Close every connection still open (idle keep-alive ones, once requests in flight are answered)."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    # -- socketserver hooks --------------------------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connection_slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many connections: closed at once
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connection_slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        connection = request
        try:
            connection.settimeout(self.idle_timeout_s)
            if self.ssl_context is not None:
                connection = self.ssl_context.wrap_socket(request, server_side=True)  # handshake on this thread
            with self._open_lock:
                self._open.add(connection)
            self.finish_request(connection, client_address)
        except (OSError, ssl.SSLError):
            pass  # a client gone, too slow, or failing the TLS handshake: nothing to answer
        except Exception:
            self.handle_error(connection, client_address)
        finally:
            with self._open_lock:
                self._open.discard(connection)
            self.shutdown_request(connection)
            self._connection_slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "appevents-bridge"
    sys_version = ""
    disable_nagle_algorithm = True
    server: HttpListener

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("bridge http %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] in ("/healthz", "/health"):
            self._send(200, b"ok\n", "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        server, service = self.server, self.server.service
        if self.path.split("?", 1)[0] != "/v1/logs":
            self._refuse(ReplyKind.NOT_FOUND, "OTLP logs go to POST /v1/logs", close=True)
            return
        if not service.authorized(self.headers.get("Authorization")):
            self._refuse(ReplyKind.UNAUTHORIZED, "a valid 'Authorization: Bearer <token>' header is required", True)
            return
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        json_encoded = content_type == _JSON
        if not json_encoded and content_type not in _PROTOBUF:
            self._refuse(ReplyKind.UNSUPPORTED, f"Content-Type must be {_PROTOBUF[0]} or {_JSON}", close=True)
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            # Chunked bodies are not read: a length is needed to refuse an oversized body before reading it.
            self._refuse(ReplyKind.BAD_REQUEST, "a Content-Length header is required", close=True, status=411)
            return
        if length > server.max_body_bytes:
            self._refuse(
                ReplyKind.TOO_LARGE, f"the body is over the limit of {server.max_body_bytes} bytes", close=True
            )
            return
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True  # the client went away mid-body
            return
        if not server.slots.acquire(blocking=False):
            self._refuse(ReplyKind.BUSY, "too many requests at once", json_encoded=json_encoded)
            return
        try:
            try:
                payload = decompress(body, self.headers.get("Content-Encoding", ""), server.max_body_bytes)
                request = parse_request(payload, json_encoded=json_encoded)
            except TooLarge as exc:
                self._refuse(ReplyKind.TOO_LARGE, str(exc), json_encoded=json_encoded)
                return
            except BadRequest as exc:
                self._refuse(ReplyKind.BAD_REQUEST, str(exc), json_encoded=json_encoded)
                return
            del body, payload
            self._reply(service.export(request, "http"), json_encoded)
        finally:
            server.slots.release()

    # -- answers -------------------------------------------------------------------------------------------------
    def _refuse(
        self,
        kind: ReplyKind,
        message: str,
        close: bool = False,
        *,
        json_encoded: bool = False,
        status: int | None = None,
    ) -> None:
        if close:
            self.close_connection = True
        self._reply(self.server.service.refuse(kind, message, "http"), json_encoded, status=status)

    def _reply(self, reply: Reply, json_encoded: bool, *, status: int | None = None) -> None:
        message: Message = (
            reply.response if reply.kind is ReplyKind.OK else Status(code=reply.kind.grpc_code, message=reply.message)
        )
        if json_encoded:
            body = json_format.MessageToJson(message, indent=None).encode()
            content_type = _JSON
        else:
            body = message.SerializeToString()
            content_type = _PROTOBUF[0]
        headers = {}
        if reply.kind.retryable:
            headers["Retry-After"] = str(math.ceil(self.server.service.intake.retry_after_s))
        if reply.kind is ReplyKind.UNAUTHORIZED:
            headers["WWW-Authenticate"] = 'Bearer realm="appevents-bridge"'
        self._send(status or reply.kind.http_status, body, content_type, headers)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
