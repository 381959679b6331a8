"""The `otlp` exporter against an endpoint that refuses the credentials: counted failed as refused (with advice on
the headers), not `unavailable` with advice to set a spool; other failures stay `unavailable`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from appevents import AppEventsSettings, Event, EventStore, configure
from support.dapr_sidecar import free_port
from support.http_stub import HttpStub, StubReply, StubRequest

pytestmark = pytest.mark.timeout(60)


class _Answering(HttpStub[int]):
    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status

    def answer(self, request: StubRequest) -> StubReply:
        self.record(self.status)
        return StubReply(self.status, b"", "application/x-protobuf")


class _RefusingLogsService(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.ServicerContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        context.abort(self.code, "no")


@pytest.fixture
def grpc_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_RefusingLogsService(request.param), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def answering() -> Iterator[Callable[[int], _Answering]]:
    started: list[_Answering] = []

    def start(status: int) -> _Answering:
        started.append(_Answering(status).start())
        return started[-1]

    yield start
    for stub in started:
        stub.stop()


def _publish_one() -> dict[str, int]:
    EventStore.publish(Event(event_type="order.received", data={"order_id": "o-1"}))
    EventStore.flush_sync(30)
    return dict(EventStore.stats()["otlp"].failed_reasons)


@pytest.mark.parametrize("status", [401, 403])
def test_an_http_endpoint_refusing_the_credentials_is_counted_as_refused(
    status: int,
    answering: Callable[[int], _Answering],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", f"{answering(status).base_url}/v1/logs")
    configure(AppEventsSettings(exporters=["otlp"]))
    with caplog.at_level(logging.ERROR, logger="appevents"):
        assert _publish_one() == {f"refused:{status}": 1}
    assert "refused the credentials" in caplog.text
    assert "OTEL_EXPORTER_OTLP_(LOGS_)HEADERS" in caplog.text
    assert "APPEVENTS_SPOOL_PATH" not in caplog.text


def test_an_http_endpoint_that_is_not_a_refusal_stays_unavailable(
    answering: Callable[[int], _Answering], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", f"{answering(400).base_url}/v1/logs")
    configure(AppEventsSettings(exporters=["otlp"]))
    assert _publish_one() == {"unavailable": 1}


@pytest.mark.parametrize(
    "grpc_endpoint", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED], indirect=True
)
def test_a_grpc_endpoint_refusing_the_credentials_is_counted_as_refused(
    grpc_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    configure(AppEventsSettings(exporters=["otlp"]))
    [reason] = _publish_one()
    assert reason in ("refused:UNAUTHENTICATED", "refused:PERMISSION_DENIED")
