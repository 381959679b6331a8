"""OTLP/gRPC: ``opentelemetry.proto.collector.logs.v1.LogsService/Export`` on a ``grpc`` server.

gRPC itself enforces the body limit (``grpc.max_receive_message_length``: ``RESOURCE_EXHAUSTED``, the message
is not handed over) and bounds concurrency (``maximum_concurrent_rpcs``). Retry hints go in the trailers both ways
OTLP clients read them: ``google.rpc.RetryInfo`` as ``google.rpc.retryinfo-bin`` (the Python exporter) and inside
the ``grpc-status-details-bin`` status (the Go exporter, i.e. the collector).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from appevents._threads import process_signals_blocked
from appevents.bridge._service import ExportService, Reply, ReplyKind

__all__ = ["GrpcListener"]


_METHOD = "Export"
_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


class _LogsService:
    """``LogsService/Export``, registered with raw bytes in: a malformed message is answered ``INVALID_ARGUMENT``
    by us (gRPC's own deserialization would make it ``INTERNAL``), after the token was checked."""

    def __init__(self, service: ExportService, max_concurrent_requests: int) -> None:
        self._service = service
        self._slots = threading.BoundedSemaphore(max_concurrent_requests)

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(
            self.export,
            request_deserializer=None,  # bytes as received
            response_serializer=ExportLogsServiceResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(_SERVICE, {_METHOD: method})

    def export(self, body: bytes, context: Any) -> ExportLogsServiceResponse:
        authorization = [value for key, value in context.invocation_metadata() if key == "authorization"]
        grant = self._service.authenticate(authorization)
        if grant is None:
            self._abort(
                context, self._service.refuse(ReplyKind.UNAUTHORIZED, "a valid bearer token is required", "grpc")
            )
        if not self._slots.acquire(blocking=False):
            self._abort(context, self._service.refuse(ReplyKind.BUSY, "too many requests at once", "grpc"))
        try:
            reply = self._service.export(body, "grpc", grant=grant)
        finally:
            self._slots.release()
        if reply.kind is not ReplyKind.OK:
            self._abort(context, reply)
        return reply.response

    def _abort(self, context: Any, reply: Reply) -> NoReturn:
        code = _CODES[reply.kind.grpc_code]
        if reply.kind.retryable:
            delay = Duration(seconds=math.ceil(self._service.intake.retry_after_s))
            retry_info = RetryInfo(retry_delay=delay)
            detail = AnyMessage()
            detail.Pack(retry_info)
            status = Status(code=reply.kind.grpc_code, message=reply.message, details=[detail])
            context.set_trailing_metadata(
                (
                    ("google.rpc.retryinfo-bin", retry_info.SerializeToString()),
                    ("grpc-status-details-bin", status.SerializeToString()),
                )
            )
        context.abort(code, reply.message)
        raise AssertionError("grpc's abort raises")  # pragma: no cover


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class GrpcListener:
    """The OTLP/gRPC listener."""

    def __init__(
        self,
        address: tuple[str, int],
        service: ExportService,
        *,
        max_body_bytes: int,
        max_concurrent_requests: int,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        # gRPC starts its core threads here, the serving thread in start(): both leave the process's signals to the
        # application (see appevents._threads).
        with process_signals_blocked():
            self._server = grpc.server(
                ThreadPoolExecutor(max_workers=max_concurrent_requests + 2, thread_name_prefix="appevents-bridge-grpc"),
                maximum_concurrent_rpcs=max_concurrent_requests * 2,
                options=[
                    ("grpc.max_receive_message_length", max_body_bytes),
                    ("grpc.so_reuseport", 0),
                ],
            )
            self._server.add_generic_rpc_handlers((_LogsService(service, max_concurrent_requests).handler(),))
            host, port = address
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if credentials is None:
                self.port = self._server.add_insecure_port(target)
            else:
                self.port = self._server.add_secure_port(target, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {target} for OTLP/gRPC")

    def start(self) -> GrpcListener:
        with process_signals_blocked():
            self._server.start()
        return self

    def stop(self, grace_s: float) -> threading.Event:
        """Refuse new calls at once, let calls in flight finish within ``grace_s``; set when all are done."""
        event: threading.Event = self._server.stop(grace_s)
        return event
