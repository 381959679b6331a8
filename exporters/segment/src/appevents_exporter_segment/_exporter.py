"""``SegmentExporter``: lifecycle events to Segment's ``/v1/batch`` through ``segment-analytics-python``.

Threads and queues: ``export()`` runs on the appevents delivery thread and only turns records into ``track()``
calls, which append to the library's bounded queue; the library's own consumer thread batches, sends, retries
with backoff and reports what it gives up on through ``on_error``. Nothing here depends on Dapr.

Shutdown: ``force_flush`` and ``shutdown`` wait — bounded by their timeout — until the library's queue is
empty and the last batch answered. The library's ``flush()`` (``queue.join()``) has no bound, and its own exit
hook only stops the consumer without flushing, so both are replaced here; the exit path is the owner's
``shutdown()`` (``EventStore`` registers it at exit; so does an OTel ``LoggerProvider``).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from pydantic import ValidationError
from segment.analytics import Client

from appevents import AppEventsSettings, ConfigurationError
from appevents.delivery import LogOnce
from appevents.records import EVENT_NAME_ATTRIBUTE, event_from_json, event_json_from_record
from appevents_exporter_segment._mapping import SegmentTrack, track_for_event
from appevents_exporter_segment._redaction import (
    REDACTED,
    SEGMENT_LOGGER_NAME,
    SecretRedactingFilter,
    redact,
)
from appevents_exporter_segment._settings import SegmentExporterSettings

__all__ = ["SegmentExportStats", "SegmentExporter", "create_segment_exporter"]

_logger = logging.getLogger("appevents.segment")


@dataclass(frozen=True)
class SegmentExportStats:
    """Counters of one :class:`SegmentExporter` (monotonic except ``pending``)."""

    #: Messages handed to the library's queue.
    accepted: int
    #: Records not sent on purpose: not a mapped lifecycle event, or not an appevents event at all.
    skipped: int
    #: Lifecycle events not queued: the library's queue was full, or the exporter was already shut down.
    dropped: int
    #: Lifecycle events that could not become a Segment message (e.g. over Segment's 32 KB message limit).
    invalid: int
    #: Accepted messages the library gave up on: refused by Segment (4xx), or retry budget exhausted.
    failed: int
    #: Accepted messages still queued or in flight.
    pending: int

    @property
    def delivered(self) -> int:
        """Accepted messages Segment answered with 2xx (derived: accepted - failed - pending)."""
        return max(0, self.accepted - self.failed - self.pending)


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


class SegmentExporter(LogRecordExporter):
    """Send lifecycle events (``event_name`` in the mapping) to Segment as ``track`` calls.

    ``SegmentExporter()`` reads :class:`SegmentExporterSettings` (``APPEVENTS_SEGMENT_*``) and the core
    :class:`~appevents.AppEventsSettings` (fallback application and tenant) from the environment, which is what
    the ``opentelemetry_logs_exporter`` entry point ``appevents_segment`` needs. Raises
    :class:`~appevents.ConfigurationError` when no write key is set.
    """

    def __init__(
        self,
        settings: SegmentExporterSettings | None = None,
        *,
        app_settings: AppEventsSettings | None = None,
    ) -> None:
        self.settings = settings if settings is not None else _read_settings()
        write_key = self.settings.write_key.get_secret_value() if self.settings.write_key is not None else ""
        if not write_key:
            raise ConfigurationError(
                "the Segment exporter needs a write key: set APPEVENTS_SEGMENT_WRITE_KEY "
                "(or leave 'segment' out of APPEVENTS_EXPORTERS)"
            )
        app_settings = app_settings if app_settings is not None else AppEventsSettings()
        self._default_application = app_settings.application_name
        self._default_tenant = app_settings.tenant_id
        self._secrets = SecretRedactingFilter(write_key)
        # Before the client exists: its constructor and consumer already log through "segment".
        logging.getLogger(SEGMENT_LOGGER_NAME).addFilter(self._secrets)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._closed = False
        self._log_once = LogOnce(_logger)
        self._client = Client(write_key, on_error=self._on_send_error, **self.settings.client_options())
        # The library's exit hook stops its consumer without flushing; our owner's shutdown() drains instead.
        atexit.unregister(self._client.join)

    def __repr__(self) -> str:
        return f"SegmentExporter(host={self.settings.host!r}, write_key={REDACTED!r})"

    # -- delivery thread -------------------------------------------------------------------------------------
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Queue a ``track`` call per mapped lifecycle event; FAILURE if any of them could not be queued."""
        complete = True
        for record in batch:
            track = self._track_for(record)
            if track is not None and not self._enqueue(track):
                complete = False
        return LogRecordExportResult.SUCCESS if complete else LogRecordExportResult.FAILURE

    def _track_for(self, record: ReadableLogRecord) -> SegmentTrack | None:
        # records.py puts the lifecycle name in an attribute, so business events are skipped without parsing.
        attributes = record.log_record.attributes or {}
        body = event_json_from_record(record)
        if body is None or self.settings.segment_event_name(_as_str(attributes.get(EVENT_NAME_ATTRIBUTE))) is None:
            self._count("skipped")
            return None
        try:
            event = event_from_json(body)
        except ValidationError as exc:
            self._count("invalid")
            self._log_once(
                "invalid-body",
                logging.ERROR,
                "appevents: a lifecycle record's body is not a valid event (%d errors); not sent to Segment",
                exc.error_count(),
            )
            return None
        return track_for_event(
            event,
            record.log_record.timestamp,
            self.settings,
            default_application=self._default_application,
            default_tenant=self._default_tenant,
        )

    def _enqueue(self, track: SegmentTrack) -> bool:
        if self._closed:
            self._count("dropped")
            self._log_once(
                "closed",
                logging.WARNING,
                "appevents: the Segment exporter is shut down; lifecycle events are dropped and counted",
            )
            return False
        # One producer (the delivery thread): checking first keeps the library from warning once per message.
        if self._client.queue.full():
            self._count("dropped")
            self._log_once(
                "queue-full",
                logging.WARNING,
                "appevents: the Segment queue is full (%d messages); dropping lifecycle events until it "
                "drains (raise APPEVENTS_SEGMENT_MAX_QUEUE_SIZE or check that Segment is reachable)",
                self.settings.max_queue_size,
            )
            return False
        self._count("accepted")
        try:
            queued, _ = self._client.track(
                user_id=track.user_id,
                event=track.event,
                properties=track.properties,
                timestamp=track.timestamp,
                message_id=track.message_id,
            )
        except Exception as exc:  # too large for Segment, or a value the library refuses
            self._count("accepted", -1)
            self._count("invalid")
            self._log_once(
                f"invalid:{type(exc).__name__}",
                logging.ERROR,
                "appevents: Segment refused to queue a %r message (%s); it is counted as invalid",
                track.event,
                type(exc).__name__,
            )
            return False
        if not queued:
            self._count("accepted", -1)
            self._count("dropped")
            return False
        return True

    def _count(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._counts[counter] += n

    # -- library consumer thread -----------------------------------------------------------------------------
    def _on_send_error(self, error: Exception, batch: Sequence[Any]) -> None:
        self._count("failed", len(batch))
        status = getattr(error, "status", None)
        self._log_once(
            f"send:{status if status is not None else type(error).__name__}",
            logging.ERROR,
            "appevents: Segment did not take a batch of %d message(s): %s. They are counted as failed; "
            "further failures of this kind are counted, not logged.",
            len(batch),
            redact(str(error), self._secrets.secrets),
        )

    # -- control ---------------------------------------------------------------------------------------------
    def _wait_drained(self, timeout_s: float) -> bool:
        """Wait until every queued message has been answered (sent or given up), up to ``timeout_s``."""
        queue = self._client.queue
        deadline = time.monotonic() + timeout_s
        with queue.all_tasks_done:
            while queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                queue.all_tasks_done.wait(remaining)
        return True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until everything queued so far is delivered or given up; False if the timeout ran out first.

        The library's consumer waits up to ``upload_interval_ms`` to fill a batch, so a flush can take that long.
        """
        return self._wait_drained(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Deliver what is queued (up to ``shutdown_timeout_ms``), then stop the library's consumer thread.

        Messages still queued after that are reported in one warning and stay counted as ``pending``.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wait_drained(self.settings.shutdown_timeout_ms / 1000)
        consumers = self._client.consumers or []
        for consumer in consumers:
            consumer.pause()
        # A paused consumer finishes its current request (bounded by the request timeout) and its batch wait.
        join_timeout = self.settings.timeout_ms / 1000 + self.settings.upload_interval_ms / 1000 + 1.0
        for consumer in consumers:
            consumer.join(timeout=join_timeout)
        undelivered = self._client.queue.unfinished_tasks
        if undelivered:
            _logger.warning(
                "appevents: Segment exporter shut down with %d message(s) undelivered after %d ms "
                "(raise APPEVENTS_SEGMENT_SHUTDOWN_TIMEOUT_MS or check that Segment is reachable)",
                undelivered,
                self.settings.shutdown_timeout_ms,
            )
        if not any(consumer.is_alive() for consumer in consumers):
            logging.getLogger(SEGMENT_LOGGER_NAME).removeFilter(self._secrets)

    def stats(self) -> SegmentExportStats:
        with self._lock:
            counts = dict(self._counts)
        return SegmentExportStats(
            accepted=counts.get("accepted", 0),
            skipped=counts.get("skipped", 0),
            dropped=counts.get("dropped", 0),
            invalid=counts.get("invalid", 0),
            failed=counts.get("failed", 0),
            pending=self._client.queue.unfinished_tasks,
        )


def _read_settings() -> SegmentExporterSettings:
    try:
        return SegmentExporterSettings()
    except ValidationError as exc:
        # SecretStr keeps the key out of the message; other fields name themselves and the rule.
        raise ConfigurationError(f"invalid Segment exporter settings (APPEVENTS_SEGMENT_*): {exc}") from None


def create_segment_exporter(settings: AppEventsSettings) -> SegmentExporter | None:
    """``segment`` exporter factory; None (after one info line) when APPEVENTS_SEGMENT_WRITE_KEY is not set."""
    segment_settings = _read_settings()
    if segment_settings.write_key is None or not segment_settings.write_key.get_secret_value():
        _logger.info("appevents: Segment exporter disabled: APPEVENTS_SEGMENT_WRITE_KEY is not set")
        return None
    return SegmentExporter(segment_settings, app_settings=settings)
