"""The `otlp` exporter: events leave as standard OTLP/HTTP log records a collector can read back losslessly."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk.trace import TracerProvider

from appevents import AppEventsSettings, Event, EventStore, configure
from appevents._records import EVENT_ID_ATTRIBUTE, event_from_json


class OtlpReceiver(ThreadingHTTPServer):
    """A minimal OTLP/HTTP logs endpoint (protobuf), as a collector's otlp receiver would accept."""

    def __init__(self) -> None:
        self.requests: list[ExportLogsServiceRequest] = []
        self.paths: list[str] = []
        self.received = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportLogsServiceRequest()
                request.ParseFromString(body)
                receiver.paths.append(self.path)
                receiver.requests.append(request)
                receiver.received.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(60)
def test_events_reach_an_otlp_endpoint_as_log_records_with_event_name_and_trace(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    configure(AppEventsSettings(exporters=["otlp"], application_name="shop"))
    tracer = TracerProvider().get_tracer("test")
    events = [Event(event_type="order.received", data={"order_id": f"o-{i}", "total": 10.5 * i}) for i in range(5)]
    with tracer.start_as_current_span("checkout") as span:
        for event in events:
            EventStore.publish(event)
    assert EventStore.flush_sync(30)
    assert otlp_receiver.paths and set(otlp_receiver.paths) == {"/v1/logs"}
    records = [
        (resource_logs.resource, record)
        for request in otlp_receiver.requests
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    ]
    assert len(records) == 5
    for (resource, record), event in zip(records, events, strict=True):
        assert record.event_name == "order.received"
        assert event_from_json(record.body.string_value) == event
        attributes = {a.key: a.value.string_value for a in record.attributes}
        assert attributes[EVENT_ID_ATTRIBUTE] == event.event_id
        assert record.trace_id == span.get_span_context().trace_id.to_bytes(16, "big")
        service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
        assert service == "shop"


@pytest.mark.parametrize(
    ("variables", "module"),
    [
        ({}, "opentelemetry.exporter.otlp.proto.http._log_exporter"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "opentelemetry.exporter.otlp.proto.grpc._log_exporter"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "opentelemetry.exporter.otlp.proto.http._log_exporter"),
        (  # the logs-specific variable wins
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc"},
            "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
        ),
    ],
)
def test_the_otlp_protocol_variables_choose_the_transport(
    variables: dict[str, str], module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    from appevents._registry import create_otlp_exporter

    exporter = create_otlp_exporter(AppEventsSettings())
    try:
        assert type(exporter.inner).__module__ == module
    finally:
        exporter.shutdown()


def test_an_unknown_otlp_protocol_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from appevents._errors import ConfigurationError

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ConfigurationError, match="http/protobuf' or 'grpc'"):
        configure(AppEventsSettings(exporters=["otlp"]))
