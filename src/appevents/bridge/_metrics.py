"""The bridge's self-metrics, beside the delivery engine's (same ``appevents`` meter, same provider), and the
standard ``OTEL_METRICS_EXPORTER`` for the ``appevents bridge`` command.

Instruments (units per the OpenTelemetry conventions), attribute ``transport`` (``http`` or ``grpc``) on all:

* ``appevents.bridge.requests`` (counter, ``{request}``, ``outcome``) — OTLP export requests by answer: ``ok``
  (200 / OK, partial success included), ``unauthorized``, ``too_large``, ``bad_request``, ``unsupported``,
  ``not_found``, ``busy`` (429 / ``RESOURCE_EXHAUSTED``, no room), ``unavailable`` (503, shutting down or a passing
  delivery failure). A gRPC message over the body limit is refused by grpcio before the bridge sees it: not counted;
* ``appevents.bridge.records`` (counter, ``{record}``, ``result``: ``acknowledged``, ``ignored``, ``rejected``;
  ``reason`` on ``rejected``) — the log records of decoded requests: events acknowledged to the client, records
  that carry no event, events refused (invalid, or refused for good by an exporter). Equal to :class:`BridgeStats`;
* ``appevents.bridge.request.duration`` (histogram, ``s``, ``outcome``) — from a decoded request to its answer
  (delivery or spool commit included): what a collector's exporter waits for.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter

from appevents._errors import ConfigurationError
from appevents._metrics import DURATION_BUCKETS_S, Instruments, instruments_for
from appevents._registry import otlp_exporter

__all__ = ["BridgeInstruments", "bridge_instruments", "meter_provider_from_environment"]


class BridgeInstruments:
    """The bridge's instruments on one meter provider (created once per provider, as the engine's)."""

    def __init__(self, engine: Instruments) -> None:
        meter = engine.meter
        self._requests = meter.create_counter(
            "appevents.bridge.requests", unit="{request}", description="OTLP export requests, by answer"
        )
        self._records = meter.create_counter(
            "appevents.bridge.records",
            unit="{record}",
            description="Log records of decoded requests: events acknowledged, records without an event, "
            "events refused",
        )
        self._duration = meter.create_histogram(
            "appevents.bridge.request.duration",
            unit="s",
            description="From a decoded OTLP request to its answer (delivery or spool commit included)",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )

    def request(self, transport: str, outcome: str, duration_s: float | None = None) -> None:
        attributes = {"transport": transport, "outcome": outcome}
        self._requests.add(1, attributes)
        if duration_s is not None:
            self._duration.record(duration_s, attributes)

    def records(self, transport: str, acknowledged: int, ignored: int, rejected: Mapping[str, int]) -> None:
        if acknowledged:
            self._records.add(acknowledged, {"transport": transport, "result": "acknowledged"})
        if ignored:
            self._records.add(ignored, {"transport": transport, "result": "ignored"})
        for reason, count in rejected.items():
            if count:
                self._records.add(count, {"transport": transport, "result": "rejected", "reason": reason})


_by_engine: dict[Instruments, BridgeInstruments] = {}
_lock = threading.Lock()


def bridge_instruments(provider: MeterProvider | None = None) -> BridgeInstruments:
    """The bridge instruments of ``provider`` (None: as the engine chooses, see ``instruments_for``)."""
    engine = instruments_for(provider)
    with _lock:
        found = _by_engine.get(engine)
        if found is None:
            found = _by_engine[engine] = BridgeInstruments(engine)
        return found


#: ``OTEL_METRICS_EXPORTER`` values this command understands (the SDK's own exporters).
METRICS_EXPORTERS = ("otlp", "console", "none")


def meter_provider_from_environment(service_name: str) -> MeterProvider | None:
    """A meter provider for the ``appevents bridge`` process, from the standard variables: ``OTEL_METRICS_EXPORTER``
    (``otlp``, ``console``, comma-separated; unset or ``none``: no provider, the metrics go to whatever the process
    already has), ``OTEL_METRIC_EXPORT_INTERVAL`` (read by the SDK's periodic reader), the OTLP exporter's own
    ``OTEL_EXPORTER_OTLP_(METRICS_)*`` variables, and ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` for the
    resource (``service.name`` defaults to ``service_name``). The caller shuts the provider down (its last export)."""
    names = [n.strip().lower() for n in os.environ.get("OTEL_METRICS_EXPORTER", "").split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS_EXPORTERS]
    if unknown:
        raise ConfigurationError(
            f"OTEL_METRICS_EXPORTER names {', '.join(map(repr, unknown))}; appevents bridge knows "
            f"{', '.join(METRICS_EXPORTERS)}"
        )
    names = [n for n in names if n != "none"]
    if not names:
        return None
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    exporters: list[MetricExporter] = []
    for name in dict.fromkeys(names):
        if name == "console":
            exporters.append(ConsoleMetricExporter())
        else:
            exporters.append(otlp_exporter("METRICS"))
    resource = Resource.create({SERVICE_NAME: service_name}) if not _service_name_set() else Resource.create()
    return SdkMeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(exporter) for exporter in exporters]
    )


def _service_name_set() -> bool:
    attributes = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return bool(os.environ.get("OTEL_SERVICE_NAME")) or "service.name=" in attributes.replace(" ", "")
