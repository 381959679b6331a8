"""Self-metrics against the Dapr sidecar stand-in: what the sidecar refuses (and what has no component to go to)
is counted by ``appevents.events.failed``/``dropped`` exactly as ``EventStore.stats()`` counts it, per reason."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from appevents import Event, EventStore
from appevents.metrics import use_meter_provider
from appevents_exporter_dapr import DaprExporter
from support.dapr_sidecar import DaprSidecar, HttpReceiver

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader])
    use_meter_provider(provider)
    yield metric_reader
    EventStore.shutdown(timeout_s=5)
    use_meter_provider(None)
    provider.shutdown()


def counters(reader: InMemoryMetricReader) -> dict[str, dict[tuple[str, str], int]]:
    """``{instrument: {(exporter, reason or ""): value}}`` of the ``appevents`` scope (histograms: their count)."""
    found: dict[str, dict[tuple[str, str], int]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            if scope.scope.name != "appevents":
                continue
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    key = (str(attributes.get("exporter", "")), str(attributes.get("reason", "")))
                    value = point.count if isinstance(point, HistogramDataPoint) else getattr(point, "value", 0)
                    found.setdefault(metric.name, {})[key] = int(value)
    return found


def assert_dapr_counts_match(reader: InMemoryMetricReader) -> None:
    stats = EventStore.stats()["dapr"]
    found = counters(reader)
    assert found.get("appevents.events.exported", {}).get(("dapr", ""), 0) == stats.delivered
    failed = {reason: n for (name, reason), n in found.get("appevents.events.failed", {}).items() if name == "dapr"}
    dropped = {reason: n for (name, reason), n in found.get("appevents.events.dropped", {}).items() if name == "dapr"}
    assert failed == stats.failed_reasons and dropped == stats.dropped_reasons, (found, stats)
    assert found["appevents.export.duration"][("dapr", "")] >= 1


def test_refused_events_are_counted_failed_by_reason_as_in_stats(
    sidecar: DaprSidecar,
    receiver: HttpReceiver,
    dapr_env: Callable[..., None],
    pipeline: Callable[[], DaprExporter],
    reader: InMemoryMetricReader,
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar)
    pipeline()
    for marker in ("bad-3", "bad-7", "bad-11"):
        sidecar.fail_when(marker, grpc.StatusCode.INVALID_ARGUMENT)
    for n in range(20):
        EventStore.publish(Event(event_type="order.received", data={"tag": f"bad-{n}" if n in (3, 7, 11) else "ok"}))
    assert EventStore.flush_sync(30)
    stats = EventStore.stats()["dapr"]
    assert (stats.delivered, stats.failed_reasons) == (17, {"refused:INVALID_ARGUMENT": 3})
    assert_dapr_counts_match(reader)


def test_events_without_a_component_are_counted_dropped_as_in_stats(
    sidecar: DaprSidecar,
    dapr_env: Callable[..., None],
    pipeline: Callable[[], DaprExporter],
    reader: InMemoryMetricReader,
) -> None:
    dapr_env(sidecar)  # no "eventstore" component registered
    pipeline()
    for _ in range(5):
        EventStore.publish(Event(event_type="order.received"))
    assert EventStore.flush_sync(30)
    stats = EventStore.stats()["dapr"]
    assert stats.dropped_reasons == {"no_component": 5}
    assert_dapr_counts_match(reader)
