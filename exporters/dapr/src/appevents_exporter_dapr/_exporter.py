"""``DaprExporter``: delivers appevents events to a Dapr sidecar, from the exporter's own thread.

It implements the engine's encoded path, :class:`~appevents.exporting.EventExporter`; its OpenTelemetry ``export``
(``OTEL_LOGS_EXPORTER=appevents_dapr``) is a thin adapter over it. One ``export_events(batch)`` call:

1. makes sure the sidecar answers and has the component (``get_metadata()`` once, cached; re-asked with backoff
   while missing — events meanwhile are dropped as ``no_component``, with one warning);
2. gets the auth headers (one shared token) — binding modes only; without them nothing is sent;
3. sends each event's JSON as it is (never parsed) through the transport of the mode, chosen once at construction
   (:mod:`appevents_exporter_dapr._transports`): ``binding`` — one ``invoke_binding`` per event; ``batch`` — one
   per JSON array chunk; ``pubsub`` — ``publish_events`` per topic; up to ``max_in_flight`` calls at once;
4. retries transient failures with jittered exponential backoff within ``retry_max_elapsed_s``; what is still
   unsettled then, or when ``shutdown()`` is called, is returned as ``retry``. A permanent refusal fails that event
   only (``refused:<gRPC code>``, ``too_large``, ``unauthorized``), logged once per cause; a refused JSON array,
   or a bulk publish too large for the sidecar, is halved until the culprit is alone. An HTTP 401 from the
   endpoint behind the binding drops the cached token and is retried, when the header provider can refresh.

Steps 1 to 3 and the settling of each answer are one attempt (:mod:`appevents_exporter_dapr._dispatch`); step 4,
the retry window around the attempts, is here. ``export_events`` answers per event
(:class:`~appevents.exporting.ExportOutcome`) and never raises; counters: :meth:`DaprExporter.stats`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from appevents.exporting import (
    AppEventsSettings,
    Check,
    EncodedEvent,
    ExportOutcome,
    LogOnce,
    encoded_from_record,
    safe_url,
)
from appevents_exporter_dapr._auth import AuthSettings, HeaderProvider, header_provider_from_settings
from appevents_exporter_dapr._diagnose import diagnose_dapr
from appevents_exporter_dapr._dispatch import Attempt, Counters, Dispatcher
from appevents_exporter_dapr._failures import backoff_delay, describe_error
from appevents_exporter_dapr._settings import DaprExporterSettings
from appevents_exporter_dapr._transports import event_topic, json_topic, transport_for

__all__ = ["DaprExporter", "DaprExporterStats", "create_dapr_exporter"]

_logger = logging.getLogger("appevents.dapr")


@dataclass(frozen=True)
class DaprExporterStats:
    """Counters of one :class:`DaprExporter` (monotonic, in events unless named otherwise). ``delivered``,
    ``failed``, ``skipped_no_component`` and ``returned`` add up to the events ``export_events`` answered for."""

    delivered: int
    #: Event sends repeated after a transient failure (one event retried three times counts three).
    retried: int
    #: Refused for good (the outcome's ``failed``): permanent errors, never retried.
    failed: int
    #: Not sent because the sidecar does not have the component (the outcome's ``dropped``).
    skipped_no_component: int
    #: Times no auth headers could be had (token endpoint down or rejecting the credentials).
    auth_failures: int
    #: Event sends the destination behind the binding rejected with HTTP 401 (retried with a fresh token when the
    #: header provider can refresh; counted once per send, so one event may count several times).
    unauthorized: int
    #: Calls made to the sidecar (invoke_binding / publish_events).
    calls: int
    #: Log records that carried no appevents event (the exporter shares a LoggerProvider).
    ignored_records: int
    #: Returned unsettled (the outcome's ``retry``): still failing transiently when ``retry_max_elapsed_s`` ran
    #: out, or when ``shutdown()`` was called. The engine may offer the same events again.
    returned: int = 0


@dataclass(slots=True)
class _Run:
    """One ``export_events`` call: what is answered so far, and what is not settled yet."""

    pending: list[EncodedEvent]
    outcome: ExportOutcome = field(default_factory=ExportOutcome)


class DaprExporter(LogRecordExporter):
    """Deliver appevents events to Dapr. Constructible with no arguments (settings from the environment).

    ``header_provider``: where auth headers come from — ``"env"`` (default) builds the OAuth2 client-credentials
    provider from ``APPEVENTS_AUTH_*`` (None when unset); pass any :class:`~appevents_exporter_dapr.HeaderProvider`,
    or None for no auth. Construction does no I/O: the Dapr client is created on the first export.
    """

    def __init__(
        self,
        settings: DaprExporterSettings | None = None,
        *,
        header_provider: HeaderProvider | Literal["env"] | None = "env",
    ) -> None:
        self.settings = settings if settings is not None else DaprExporterSettings()
        self.mode = self.settings.mode
        self.binding = self.settings.binding
        self.operation = self.settings.operation
        self.pubsub = self.settings.pubsub
        #: The OAuth2 settings read from the environment (``header_provider="env"``), for :meth:`diagnose`.
        self._auth_settings = AuthSettings() if header_provider == "env" else None
        self._header_provider = (
            header_provider_from_settings(self._auth_settings) if header_provider == "env" else header_provider
        )
        self._transport = transport_for(self.settings)
        self._counters = Counters()
        self._log_once = LogOnce(_logger)
        self._dispatcher = Dispatcher(
            self.settings, self._transport, self._header_provider, self._counters, self._log_once
        )

    @property
    def destination(self) -> str:
        """Where events go, as the durable spool tells destinations apart (an orphan's rows are replayed only to
        the same one): the sidecar's gRPC address and the component (binding and operation, or pub/sub)."""
        from dapr.conf import settings as dapr_settings

        address = (
            dapr_settings.DAPR_GRPC_ENDPOINT or f"{dapr_settings.DAPR_RUNTIME_HOST}:{dapr_settings.DAPR_GRPC_PORT}"
        )
        return f"dapr {self.mode.value} {safe_url(address)} {self._transport.target}"

    def __repr__(self) -> str:
        target = self._transport.target
        return f"DaprExporter(mode={self.mode.value!r}, target={target!r}, auth={self._header_provider!r})"

    # -- EventExporter -------------------------------------------------------------------------------------------
    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        """Send ``batch``; returns what became of each event (delivered: not listed). Never raises."""
        run = _Run(list(batch))
        if not run.pending:
            return run.outcome
        try:
            self._deliver(run)
        except Exception as exc:  # a bug here must cost events, never the engine's thread
            self._fail_after_bug(run, exc)
        return run.outcome

    # -- LogRecordExporter ---------------------------------------------------------------------------------------
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        events: list[EncodedEvent] = []
        for record in batch:
            event = encoded_from_record(record, exporter="dapr")
            if event is None:
                self._counters.ignored += 1
            else:
                events.append(event)
        outcome = self.export_events(events)
        if outcome.failed or outcome.dropped or outcome.retry:
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # export() returns only once its batch is settled: nothing is held back here

    def shutdown(self) -> None:
        """Stop: an ``export_events`` running on another thread returns promptly (its unsettled events as
        ``retry``), and every thread this exporter started has ended when this returns. Idempotent."""
        self._dispatcher.close()

    def diagnose(self, timeout_s: float) -> list[Check]:
        """``appevents doctor``'s checks for this exporter (see :mod:`appevents_exporter_dapr._diagnose`): the
        sidecar answers, lists its components, has this exporter's component; the token endpoint issues a token.
        Each step bounded by ``timeout_s``; nothing is sent to the component; independent of this exporter's own
        client."""
        return diagnose_dapr(
            component=self._transport.component,
            kind=self._transport.kind,
            auth=self._auth_settings,
            custom_auth=self._auth_settings is None and self._header_provider is not None,
            timeout_s=timeout_s,
        )

    def stats(self) -> DaprExporterStats:
        counters = self._counters
        return DaprExporterStats(
            delivered=counters.delivered,
            retried=counters.retried,
            failed=counters.failed,
            skipped_no_component=counters.skipped,
            auth_failures=counters.auth_failures,
            unauthorized=counters.unauthorized,
            calls=counters.calls,
            ignored_records=counters.ignored,
            returned=counters.returned,
        )

    # -- the retry window ----------------------------------------------------------------------------------------
    def _deliver(self, run: _Run) -> None:
        """Attempt ``run`` until all is settled, the retry window ends or the exporter is shut down; what is still
        unsettled then is returned as ``retry``."""
        settings = self.settings
        stopping = self._dispatcher.stopping
        started = time.monotonic()
        deadline = started + settings.retry_max_elapsed_s
        failure: BaseException | None = None
        attempt = 0
        probe = False
        while not stopping.is_set():
            sending = run.pending
            result = (
                self._probe_first(sending, run.outcome) if probe else self._dispatcher.attempt(sending, run.outcome)
            )
            run.pending, failure = result.retry, result.failure
            if not run.pending:
                return
            # Nothing settled: the sidecar (or what is behind it) is most likely down. The next attempt sends one
            # event before the rest, so an outage costs one failed call per attempt rather than one per event
            # (each failed gRPC call leaves garbage behind: whole batches of them made long collection pauses).
            probe = len(run.pending) == len(sending) > 1
            if time.monotonic() >= deadline:
                break
            delay = backoff_delay(attempt, settings.retry_initial_backoff_s, settings.retry_max_backoff_s)
            if stopping.wait(min(delay, max(0.0, deadline - time.monotonic()))):
                break
            attempt += 1
            self._counters.retried += len(run.pending)
        self._return_unsettled(run, failure, time.monotonic() - started)

    def _probe_first(self, events: list[EncodedEvent], outcome: ExportOutcome) -> Attempt:
        """One event first; the others only once it is answered (delivered, or settled for good)."""
        first = self._dispatcher.attempt(events[:1], outcome)
        if first.retry:
            return Attempt(first.retry + events[1:], first.failure)
        return self._dispatcher.attempt(events[1:], outcome)

    def _return_unsettled(self, run: _Run, failure: BaseException | None, elapsed_s: float) -> None:
        pending = run.pending
        self._counters.returned += len(pending)
        run.outcome.retry.extend(pending)
        last_error = describe_error(failure)
        # The engine logs this once per cause (and keeps or counts the events): the reason carries what it says.
        if self._dispatcher.stopping.is_set():
            run.outcome.retry_reason = "exporter shut down" + (f" (last error: {last_error})" if failure else "")
            return
        run.outcome.retry_reason = (
            f"{last_error}; after retrying for {elapsed_s:.1f} s, the retry window "
            f"(APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S={self.settings.retry_max_elapsed_s:g})"
        )

    def _fail_after_bug(self, run: _Run, exc: Exception) -> None:
        outcome = run.outcome
        answered = {id(e) for e, _ in outcome.failed} | {id(e) for e, _ in outcome.dropped}
        answered |= {id(e) for e in outcome.retry}
        unanswered = [e for e in run.pending if id(e) not in answered]
        reason = f"bug:{type(exc).__name__}"
        self._counters.failed += len(unanswered)
        outcome.failed += [(e, reason) for e in unanswered]
        self._log_once.failure("bug", exc, "the Dapr exporter", "the events not settled yet are counted as failed")

    # -- topics: the pubsub transport's rule, asked of the exporter by its tests ------------------------------------
    def _topic(self, event: EncodedEvent) -> str:
        return event_topic(event, self.settings.default_topic)

    def _topic_of(self, body: str | bytes) -> str:
        return json_topic(body, self.settings.default_topic)


def create_dapr_exporter(settings: AppEventsSettings) -> DaprExporter:
    """Entry point ``appevents.exporters: dapr``: the exporter configured from ``APPEVENTS_DAPR_*``/``_AUTH_*``
    (and the application-sdk names); the core ``settings`` hold nothing it reads."""
    return DaprExporter(DaprExporterSettings())
