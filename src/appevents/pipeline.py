"""The emission pipeline: an OTel ``LoggerProvider`` whose processors feed our exporters.

``Pipeline.emit`` is the only part on the caller's path: a queue append (see :mod:`appevents.emitter`). The
emitter thread turns events into log records; serialising batches, network and disk run on each exporter's
worker thread.

Exporters are found by name in the ``appevents.exporters`` entry-point group; each entry point is a factory
``(settings) -> LogRecordExporter | None`` (None: the exporter decided it is disabled, and said why once).
The exporter distributions (``appevents-exporter-dapr``, ``appevents-exporter-segment``) register there, so the
core never imports them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Protocol

from opentelemetry.context import get_current
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from pydantic import ValidationError

from appevents.delivery import DeliveryProcessor, DeliveryStats
from appevents.emitter import Emitter
from appevents.errors import ConfigurationError
from appevents.records import LOGGER_NAME
from appevents.settings import AppEventsSettings
from appevents.version import __version__

__all__ = [
    "EXPORTER_ENTRY_POINT_GROUP",
    "ExporterFactory",
    "Pipeline",
    "available_exporters",
    "build_pipeline",
    "create_console_exporter",
    "create_otlp_exporter",
    "load_exporter",
]

EXPORTER_ENTRY_POINT_GROUP = "appevents.exporters"
_logger = logging.getLogger(__name__)


class ExporterFactory(Protocol):
    def __call__(self, settings: AppEventsSettings) -> LogRecordExporter | None: ...


def available_exporters() -> list[str]:
    """Names of the exporters installed in this environment."""
    return sorted({ep.name for ep in entry_points(group=EXPORTER_ENTRY_POINT_GROUP)})


def load_exporter(name: str, settings: AppEventsSettings) -> LogRecordExporter | None:
    """Build the exporter registered as ``name``; :class:`ConfigurationError` if none is installed."""
    matches = entry_points(group=EXPORTER_ENTRY_POINT_GROUP, name=name)
    if not matches:
        raise ConfigurationError(
            f"no appevents exporter named {name!r} is installed (installed: {', '.join(available_exporters())}); "
            f"install its distribution, e.g. `pip install 'appevents[{name}]'`, or fix APPEVENTS_EXPORTERS"
        )
    factory: ExporterFactory = next(iter(matches)).load()
    try:
        return factory(settings)
    except ConfigurationError:
        raise
    except ValidationError as exc:
        # Without the offending input values: a bad setting may be a secret.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"exporter {name!r} is misconfigured: {problems}") from None


def create_console_exporter(settings: AppEventsSettings) -> LogRecordExporter:
    """``console``: the OTel SDK's console exporter (one JSON log record per event on stdout)."""
    return ConsoleLogRecordExporter()


def create_otlp_exporter(settings: AppEventsSettings) -> LogRecordExporter:
    """``otlp``: the standard OTLP/HTTP log exporter, configured by the ``OTEL_EXPORTER_OTLP_*`` variables."""
    try:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    except ImportError as exc:
        raise ConfigurationError(
            "the otlp exporter needs opentelemetry-exporter-otlp-proto-http: pip install 'appevents[otlp]'"
        ) from exc
    return OTLPLogExporter()


def _resource(settings: AppEventsSettings) -> Resource:
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME itself; an application name that was
    # set (by any of its names) wins, the default does not override a service.name from the environment.
    attributes: dict[str, str] = {
        "appevents.tenant_id": settings.tenant_id,
        "telemetry.sdk.appevents.version": __version__,
    }
    if "application_name" in settings.model_fields_set:
        attributes["service.name"] = settings.application_name
    return Resource.create(attributes)


class Pipeline:
    """A configured LoggerProvider plus the delivery processors of its exporters."""

    def __init__(
        self,
        settings: AppEventsSettings,
        exporters: Mapping[str, LogRecordExporter],
        extra_processors: Iterable[LogRecordProcessor] = (),
    ) -> None:
        self.settings = settings
        self.provider = LoggerProvider(resource=_resource(settings), shutdown_on_exit=False)
        self.processors: dict[str, DeliveryProcessor] = {}
        for name, exporter in exporters.items():
            processor = DeliveryProcessor(
                exporter,
                name=name,
                max_queue_size=settings.max_queue_size,
                max_export_batch_size=settings.max_export_batch_size,
                schedule_delay_s=settings.schedule_delay_ms / 1000,
            )
            self.processors[name] = processor
            self.provider.add_log_record_processor(processor)
        self._extra = list(extra_processors)
        for extra in self._extra:
            self.provider.add_log_record_processor(extra)
        self.logger = self.provider.get_logger(LOGGER_NAME, __version__)
        self.emitter = Emitter(self.logger, max_pending=settings.max_queue_size)

    @property
    def has_destinations(self) -> bool:
        return bool(self.processors or self._extra)

    def emit(self, event_type: str, body: str, attributes: dict[str, str], timestamp_ns: int) -> None:
        """Hand one enriched event (its JSON and record attributes) to the emitter — caller's path, memory only;
        it becomes a log record on the emitter thread, in the OTel context current here."""
        self.emitter.submit(timestamp_ns, event_type, body, attributes, get_current())

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything published so far has been exported; False if the timeout ran out first."""
        deadline = time.monotonic() + timeout_s
        if not self.emitter.drain(timeout_s):
            return False
        remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
        return bool(self.provider.force_flush(remaining_ms))

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Drain and stop every stage within ``timeout_s`` in all; False if events were left undelivered.

        The exporters drain concurrently (each has its own worker), so the waits below overlap: the total is
        bounded by ``timeout_s``, not by the sum of per-exporter timeouts. What is left is reported once.
        """
        deadline = time.monotonic() + timeout_s

        def remaining_ms() -> int:
            return max(0, int((deadline - time.monotonic()) * 1000))

        drained = self.emitter.close(timeout_s)
        for processor in self.processors.values():
            drained = processor.close(remaining_ms()) and drained
        for extra in self._extra:
            extra.shutdown()
        if not drained:
            left = {name: s.queued for name, s in self.stats().items() if s.queued}
            _logger.warning(
                "appevents: shutdown ran out of its %.1fs before everything was delivered; events left per stage: "
                "%s (raise the timeout or check the destinations)",
                timeout_s,
                left or "in flight in an exporter",
            )
        return drained

    def stats(self) -> dict[str, DeliveryStats]:
        """Counters of the emitter (key ``emitter``) and of each exporter's delivery queue."""
        return {"emitter": self.emitter.stats(), **{name: p.stats() for name, p in self.processors.items()}}


def build_pipeline(
    settings: AppEventsSettings,
    exporters: Mapping[str, LogRecordExporter] | None = None,
    extra_processors: Iterable[LogRecordProcessor] = (),
) -> Pipeline:
    """Build the pipeline for ``settings``: the named exporters plus any given instances."""
    built: dict[str, LogRecordExporter] = {}
    for name in settings.exporters:
        exporter = load_exporter(name, settings)
        if exporter is not None:
            built[name] = exporter
    built.update(exporters or {})
    return Pipeline(settings, built, extra_processors)
