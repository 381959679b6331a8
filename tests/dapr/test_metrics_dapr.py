"""Self-metrics against the Dapr sidecar stand-in: what the sidecar refuses (and what has no component to go to)
is counted by ``appevents.events.failed``/``dropped`` exactly as ``EventStore.stats()`` counts it, per reason."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from appevents import Event, EventStore
from appevents_exporter_dapr import DaprExporter
from support.dapr_sidecar import DaprSidecar, HttpReceiver
from support.metric_points import Metrics, assert_metrics_equal_stats

pytestmark = pytest.mark.timeout(60)


def assert_dapr_counts_match(reader: InMemoryMetricReader) -> None:
    metrics = Metrics(reader)
    assert_metrics_equal_stats(metrics, EventStore.stats())
    assert metrics.durations().get("dapr", 0) >= 1


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
