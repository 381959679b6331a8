"""The bridge's self-metrics: requests by transport and answer, records by result, the request duration — equal to
what the bridge counted itself (``Bridge.stats()``) and beside the engine's metrics on the same provider; and the
``appevents bridge`` command exporting them where the standard ``OTEL_METRICS_EXPORTER`` says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from appevents import AppEventsSettings
from appevents.bridge import Bridge, BridgeSettings
from appevents.exporting import EncodedEvent, ExportOutcome
from support.bridge_process import TOKEN, BridgeProcess, events, post, request_of
from support.metric_points import Metrics

pytestmark = pytest.mark.timeout(60)


class Taking:
    """Delivers every event but those holding ``"refuse"``, which it refuses for good."""

    def __init__(self) -> None:
        self.delivered = 0

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        outcome = ExportOutcome()
        for event in batch:
            if b'"refuse"' in event.body:
                outcome.failed.append((event, "too_large"))
            else:
                self.delivered += 1
        return outcome

    def shutdown(self) -> None:
        pass


@pytest.fixture
def measured() -> Iterator[tuple[Bridge, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    settings = BridgeSettings(
        http="127.0.0.1:0", grpc="127.0.0.1:0", token=TOKEN, max_body_bytes=64 * 1024, ack_timeout_s=10
    )
    app = AppEventsSettings(exporters=[], schedule_delay_ms=10)
    bridge = Bridge(settings, app, exporters={"taking": Taking()}, meter_provider=provider).start()
    yield bridge, reader
    bridge.stop(5)
    provider.shutdown()


def _bodies(tag: str, count: int) -> list[str]:
    return [e.model_dump_json() for e in events(count, tag=tag)]


def _export_grpc(bridge: Bridge, body: bytes, token: str = TOKEN) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{bridge.grpc_port}") as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        try:
            call(body, metadata=(("authorization", f"Bearer {token}"),), timeout=20)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


def test_requests_and_records_are_counted_by_transport_and_answer_as_the_bridge_counts_them(
    measured: tuple[Bridge, InMemoryMetricReader],
) -> None:
    bridge, reader = measured
    url = f"http://127.0.0.1:{bridge.http_port}"
    broken = json.dumps(json.loads(_bodies("x", 1)[0]) | {"event_type": "Bad Type"})
    mixed = request_of(*_bodies("http", 3), "a plain log line", broken, *_bodies("refuse", 2))
    assert post(url, mixed).status == 200
    assert post(url, request_of(*_bodies("nope", 1)), token="wrong").status == 401
    assert post(url, request_of("x" * 70_000)).status == 413
    assert _export_grpc(bridge, b"\xff not protobuf") is grpc.StatusCode.INVALID_ARGUMENT
    assert _export_grpc(bridge, request_of(*_bodies("grpc", 4))) is grpc.StatusCode.OK
    assert _export_grpc(bridge, request_of(*_bodies("grpc", 1)), token="wrong") is grpc.StatusCode.UNAUTHENTICATED

    found = Metrics(reader)
    requests = {
        (dict(k)["transport"], dict(k)["outcome"]): v for k, v in found.values("appevents.bridge.requests").items()
    }
    assert requests == {
        ("http", "ok"): 1,
        ("http", "unauthorized"): 1,
        ("http", "too_large"): 1,
        ("grpc", "bad_request"): 1,
        ("grpc", "ok"): 1,
        ("grpc", "unauthorized"): 1,
    }
    records = {tuple(sorted(dict(k).items())): v for k, v in found.values("appevents.bridge.records").items() if v}
    assert records == {
        (("result", "acknowledged"), ("transport", "http")): 3,
        (("result", "ignored"), ("transport", "http")): 1,
        (("reason", "invalid"), ("result", "rejected"), ("transport", "http")): 1,
        (("reason", "exporter:too_large"), ("result", "rejected"), ("transport", "http")): 2,
        (("result", "acknowledged"), ("transport", "grpc")): 4,
    }
    stats = bridge.stats()
    assert (stats.acknowledged, stats.ignored) == (3 + 4, 1)
    assert stats.rejected == {"invalid": 1, "exporter:too_large": 2}
    assert stats.refused_requests == {"unauthorized": 2, "too_large": 1, "bad_request": 1}

    durations = found.points["appevents.bridge.request.duration"]
    timed = {(dict(k)["transport"], dict(k)["outcome"]): p for k, p in durations.items()}
    assert set(timed) == {("http", "ok"), ("grpc", "ok")}  # only decoded requests are timed
    for point in timed.values():
        assert isinstance(point, HistogramDataPoint)
        assert point.count == 1 and point.sum > 0
    # the engine's metrics went to the same provider: 3 + 4 delivered, 2 failed for good
    assert found.by_exporter("appevents.events.exported") == {"taking": 7}
    assert found.by_reason("appevents.events.failed") == {"taking": {"too_large": 2}}


def _metric_documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents the SDK's console metric exporter wrote into a log that also holds log lines."""
    decoder = json.JSONDecoder()
    documents, index = [], text.find('{\n    "resource_metrics"')
    while index >= 0:
        document, end = decoder.raw_decode(text, index)
        documents.append(document)
        index = text.find('{\n    "resource_metrics"', end)
    return documents


def _sums(documents: list[dict[str, Any]], name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    """The last value of each data point of counter ``name`` (cumulative), by its sorted attributes."""
    found: dict[tuple[tuple[str, Any], ...], float] = {}
    for document in documents:
        for resource in document["resource_metrics"]:
            for scope in resource["scope_metrics"]:
                for metric in scope["metrics"]:
                    if metric["name"] == name:
                        for point in metric["data"]["data_points"]:
                            found[tuple(sorted(point["attributes"].items()))] = point["value"]
    return found


def test_the_bridge_command_exports_its_metrics_where_otel_metrics_exporter_says(
    start_bridge: Callable[..., BridgeProcess],
) -> None:
    # a long interval: the only export is the last one, at shutdown, so it holds every count
    bridge = start_bridge(
        OTEL_METRICS_EXPORTER="console", OTEL_METRIC_EXPORT_INTERVAL="600000", OTEL_SERVICE_NAME="bridge-under-test"
    )
    assert post(bridge.http_url, request_of(*_bodies("cli", 5), "not an event")).status == 200
    assert post(bridge.http_url, request_of(*_bodies("cli", 1)), token="wrong").status == 401
    assert bridge.terminate() == 0

    documents = _metric_documents(bridge.log())
    assert documents, bridge.log()[-2000:]
    resource = documents[-1]["resource_metrics"][0]["resource"]["attributes"]
    assert resource["service.name"] == "bridge-under-test"
    assert _sums(documents, "appevents.bridge.requests") == {
        (("outcome", "ok"), ("transport", "http")): 1,
        (("outcome", "unauthorized"), ("transport", "http")): 1,
    }
    records = _sums(documents, "appevents.bridge.records")
    assert records[(("result", "acknowledged"), ("transport", "http"))] == 5
    assert records[(("result", "ignored"), ("transport", "http"))] == 1
    assert _sums(documents, "appevents.events.exported") == {(("exporter", "dapr"),): 5}
    assert TOKEN not in bridge.log()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, "OTEL_METRICS_EXPORTER names 'prometheus'"),
        ({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"}, "METRICS_)PROTOCOL"),
    ],
)
def test_a_metrics_exporter_the_bridge_cannot_build_stops_it_with_a_clear_message(
    env: dict[str, str], expected: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("APPEVENTS_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, "-m", "appevents", "bridge", "--http", "127.0.0.1:0", "--grpc", "off"],
        env={**base, "APPEVENTS_EXPORTERS": "memory", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
