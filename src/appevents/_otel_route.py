"""The ``otel`` exporter: appevents events into the application's global OpenTelemetry logs pipeline.

Events are OpenTelemetry log records, so an application whose global ``LoggerProvider`` is set up — by
``opentelemetry-instrument`` with ``OTEL_LOGS_EXPORTER``, the distro, or in code with ``set_logger_provider`` — can
have its events flow through it. The ``otel`` exporter emits each event, on its own engine thread, as a log record
through that provider (logger ``appevents``): ``event_name`` = the event type, body = the event JSON, the
``appevents.*`` attributes, the publisher's trace context. The provider's processors and exporters take it from
there — OTLP, the console, and the appevents exporters' OTel faces (``appevents_segment``, ``appevents_dapr``).

When it is used:

* named in ``APPEVENTS_EXPORTERS`` (``otel``, beside others or alone);
* automatically when ``APPEVENTS_EXPORTERS`` is unset and ``OTEL_LOGS_EXPORTER`` names an appevents exporter
  (``appevents_segment``, ``appevents_dapr``, any ``appevents_*``): then it replaces the default ``local``, so
  ``OTEL_LOGS_EXPORTER=appevents_segment opentelemetry-instrument python app.py`` delivers to Segment as written;
* never with ``OTEL_SDK_DISABLED=true``: the SDK's providers are no-ops then, so the automatic choice falls back
  to ``local`` and a named ``otel`` disables itself with one warning.

One destination, one delivery: a record emitted here carries ``appevents.delivered_by``, the names of the exporters
that deliver the same event from appevents' own pipeline (``APPEVENTS_EXPORTERS``); an appevents exporter used as
an OTel ``LogRecordExporter`` skips records that name it (:func:`appevents.exporting.encoded_from_record` with
``exporter=``). With ``APPEVENTS_EXPORTERS=segment,otel`` and ``OTEL_LOGS_EXPORTER=appevents_segment,otlp``, Segment
gets each event once (from appevents' ``segment`` exporter), the OTLP exporter gets every event.

What is counted: an event is *delivered* for ``otel`` once the global provider took it (``emit``); from there the
provider's processors own it (OTel's ``BatchLogRecordProcessor`` drops the oldest on a full queue and ignores
export results). With no provider set yet (the API's proxy), events are dropped and counted
(``no_logger_provider``), with one warning. At shutdown (``EventStore.shutdown``, also at interpreter exit, before
the provider's own exit hook) the provider is flushed, never shut down: it is the application's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import _logs as otel_logs

from appevents._counting import LogOnce
from appevents._encoded import Check, EncodedEvent, ExportOutcome
from appevents._engine import log_record_of
from appevents._otel_env import (
    OTEL_EXPORTER_NAME,
    appevents_names_in_otel_logs_exporter,
    otel_logs_exporter_names,
    otel_sdk_disabled,
)
from appevents._records import DELIVERED_BY_ATTRIBUTE, LOGGER_NAME
from appevents._version import __version__

if TYPE_CHECKING:
    from appevents._settings import AppEventsSettings

__all__ = ["OTelLogsExporter", "create_otel_exporter", "unused_otel_route"]

_logger = logging.getLogger("appevents")


def _is_pipeline(provider: object) -> bool:
    # The API's proxy (nothing set yet) and no-op providers cannot flush; the SDK's LoggerProvider (and any
    # provider that buffers) can.
    return callable(getattr(provider, "force_flush", None))


class OTelLogsExporter:
    """Emits events into a ``LoggerProvider``'s pipeline (by default the global one, looked up at each batch, so
    a provider set after appevents was configured is used from then on).

    ``delivered_by``: names of the exporters that deliver the same events from appevents' own pipeline; written
    on each record as ``appevents.delivered_by`` so that their OTel faces in the provider's pipeline skip them.
    """

    def __init__(self, delivered_by: Sequence[str] = (), logger_provider: Any = None) -> None:
        delivered = ",".join(delivered_by)
        #: Marks the events this route delivers for exporters appevents' own pipeline also has (they skip them).
        self._delivered_attributes = {DELIVERED_BY_ATTRIBUTE: delivered} if delivered else None
        self._provider = logger_provider
        self._log_once = LogOnce(_logger)

    def _current_provider(self) -> Any:
        return self._provider if self._provider is not None else otel_logs.get_logger_provider()

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        """Emit every event of ``batch`` through the provider; with no provider set, drop them (counted)."""
        provider = self._current_provider()
        if not _is_pipeline(provider):
            self._log_once(
                "no-provider",
                logging.WARNING,
                "appevents: exporter 'otel' has no OpenTelemetry LoggerProvider to emit into (none is set: run under "
                "opentelemetry-instrument with OTEL_LOGS_EXPORTER, or call opentelemetry._logs.set_logger_provider); "
                "its events are dropped and counted (no_logger_provider)",
            )
            return ExportOutcome(dropped=[(event, "no_logger_provider") for event in batch])
        otel_logger = provider.get_logger(LOGGER_NAME, __version__)
        for event in batch:
            otel_logger.emit(log_record_of(event, self._delivered_attributes))
        return ExportOutcome()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the provider's processors (what was emitted is exported before this returns)."""
        provider = self._current_provider()
        if not _is_pipeline(provider):
            return True
        return bool(provider.force_flush(timeout_millis))

    def shutdown(self) -> None:
        """Flush the provider, never shut it down (it is the application's). Runs in appevents' exit drain, before
        the provider's own exit hook and before thread pools refuse work, so its exporters still can send."""
        self.force_flush(10_000)

    def diagnose(self, timeout_s: float) -> list[Check]:
        """``appevents doctor``: where the events go from here (the provider set in this process, or what
        ``OTEL_LOGS_EXPORTER`` will make ``opentelemetry-instrument`` set up)."""
        from importlib.metadata import entry_points

        provider = self._current_provider()
        if _is_pipeline(provider):
            return [Check("otel logs pipeline", True, f"the global LoggerProvider is {type(provider).__name__}")]
        names = otel_logs_exporter_names()
        if not names:
            return [
                Check(
                    "otel logs pipeline",
                    False,
                    "no LoggerProvider is set in this process and OTEL_LOGS_EXPORTER is unset",
                    "run the application under opentelemetry-instrument with OTEL_LOGS_EXPORTER (e.g. "
                    "appevents_segment, otlp), or set a LoggerProvider in code before publishing",
                    required=False,
                )
            ]
        installed = {ep.name for ep in entry_points(group="opentelemetry_logs_exporter")}
        missing = [name for name in names if name not in installed]
        if missing:
            return [
                Check(
                    "otel logs pipeline",
                    False,
                    f"OTEL_LOGS_EXPORTER names {', '.join(missing)}, not installed as an OpenTelemetry logs exporter "
                    f"(installed: {', '.join(sorted(installed)) or 'none'})",
                    "install the exporter's distribution (appevents_segment: pip install 'appevents[segment]', "
                    "appevents_dapr: pip install 'appevents[dapr]') or fix OTEL_LOGS_EXPORTER",
                )
            ]
        if not list(entry_points(group="opentelemetry_configurator")):
            return [
                Check(
                    "otel logs pipeline",
                    False,
                    f"OTEL_LOGS_EXPORTER={','.join(names)}, but no OpenTelemetry configurator is installed: "
                    "opentelemetry-instrument would set up no logs pipeline",
                    "pip install opentelemetry-distro (it brings opentelemetry-instrument and its configurator)",
                )
            ]
        return [
            Check(
                "otel logs pipeline",
                True,
                f"OTEL_LOGS_EXPORTER={','.join(names)}: installed, with a configurator; opentelemetry-instrument "
                "sets up the pipeline (no LoggerProvider in this process)",
            )
        ]


def create_otel_exporter(settings: AppEventsSettings) -> OTelLogsExporter | None:
    """``otel``: the global OpenTelemetry logs pipeline (None, with one warning, when ``OTEL_SDK_DISABLED=true``)."""
    if otel_sdk_disabled():
        _logger.warning(
            "appevents: exporter 'otel' is disabled: OTEL_SDK_DISABLED=true makes the OpenTelemetry logs pipeline a "
            "no-op, so nothing would be delivered through it"
        )
        return None
    others = [name for name in settings.exporters if name != OTEL_EXPORTER_NAME]
    return OTelLogsExporter(delivered_by=others)


def unused_otel_route(settings: AppEventsSettings) -> list[Check]:
    """``appevents doctor``: an informational line when ``OTEL_LOGS_EXPORTER`` names appevents exporters that no
    event will reach (``APPEVENTS_EXPORTERS`` is set and has no ``otel``); else nothing."""
    named = appevents_names_in_otel_logs_exporter()
    if not named or OTEL_EXPORTER_NAME in settings.exporters or otel_sdk_disabled():
        return []
    return [
        Check(
            "otel logs pipeline",
            False,
            f"OTEL_LOGS_EXPORTER names {', '.join(named)}, but APPEVENTS_EXPORTERS={','.join(settings.exporters)} "
            "has no 'otel': appevents events do not go through the global logs pipeline, so those get none",
            "add otel to APPEVENTS_EXPORTERS (a destination named in both still gets each event once), or leave "
            "the appevents_* names out of OTEL_LOGS_EXPORTER",
            required=False,
        )
    ]
