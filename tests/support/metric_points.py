"""Reading what appevents records through the OpenTelemetry metrics API, for the self-metrics tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from appevents import DeliveryStats, EventStore, use_meter_provider

Points = dict[frozenset[tuple[str, object]], object]


class Metrics:
    """The ``appevents`` scope's points of one collection, by instrument and attribute set."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.points: dict[str, Points] = {}
        data = reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                if scope.scope.name != "appevents":
                    continue
                for metric in scope.metrics:
                    self.points[metric.name] = {
                        frozenset((point.attributes or {}).items()): point for point in metric.data.data_points
                    }
                    assert metric.unit, metric.name

    def values(self, name: str) -> dict[frozenset[tuple[str, object]], object]:
        return {key: getattr(point, "value", None) for key, point in self.points.get(name, {}).items()}

    def by_exporter(self, name: str) -> dict[str, int]:
        """``{exporter: value}``, for instruments without ``reason``."""
        return {dict(key)["exporter"]: value for key, value in self.values(name).items() if value}  # type: ignore[misc]

    def by_reason(self, name: str) -> dict[str, dict[str, int]]:
        """``{exporter: {reason: value}}``."""
        found: dict[str, dict[str, int]] = {}
        for key, value in self.values(name).items():
            attributes = dict(key)
            if value:
                found.setdefault(str(attributes["exporter"]), {})[str(attributes["reason"])] = value  # type: ignore[assignment]
        return found

    def durations(self) -> dict[str, int]:
        """Points (export calls) per exporter of ``appevents.export.duration``."""
        found = {}
        for key, point in self.points.get("appevents.export.duration", {}).items():
            assert isinstance(point, HistogramDataPoint)
            found[str(dict(key)["exporter"])] = point.count
        return found


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """Pipelines built during the test record to an SDK provider with this in-memory reader (the global provider
    can be set only once per process)."""
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader])
    use_meter_provider(provider)
    yield metric_reader
    EventStore.shutdown(timeout_s=5)
    use_meter_provider(None)
    provider.shutdown()


def assert_metrics_equal_stats(metrics: Metrics, stats: dict[str, DeliveryStats]) -> None:
    """Every stage's delivered, failed and dropped counts (per reason) are exactly the counters' values."""
    exported = metrics.by_exporter("appevents.events.exported")
    failed = metrics.by_reason("appevents.events.failed")
    dropped = metrics.by_reason("appevents.events.dropped")
    for name, stage in stats.items():
        assert stage.accepted == stage.delivered + stage.failed + stage.dropped + stage.pending, stage
        assert exported.get(name, 0) == stage.delivered, (name, exported, stage)
        assert failed.get(name, {}) == stage.failed_reasons, (name, failed, stage)
        assert dropped.get(name, {}) == stage.dropped_reasons, (name, dropped, stage)
    assert set(exported) | set(failed) | set(dropped) <= set(stats)
