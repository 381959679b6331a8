"""``SegmentExporter``: lifecycle events to Segment's ``/v1/batch`` through ``segment-analytics-python``.

Threads and queues: ``export_events()`` runs on the exporter's engine thread. It turns each lifecycle event into a
``track()`` call, which appends to the library's bounded queue, then waits until the library has answered every
message of the batch. The library's consumer thread batches, sends and retries with backoff; it reports what it
gives up on through ``on_error(error, batch)``, and a small subclass of it (``_library.ReportingConsumer``) reports
what Segment accepted, which the library itself does not. Answers are matched to events by ``messageId`` (= event
id) and kept per event as ``_answers.Sent``.

The wait is bounded by :meth:`SegmentExporterSettings.export_timeout_s` (by default the library's own retry window)
and cut short by ``shutdown()``. Events unanswered by then are returned for retry, and their messages still queued
(not yet sent) are taken back out of the library's queue, so that a later offer does not send them twice. One that
was in flight may still arrive: Segment dedupes on ``messageId``. Nothing here depends on Dapr.

The library's ``flush()`` (``queue.join()``) has no bound, and its exit hook only stops the consumer, so both are
replaced here; the exit path is the owner's ``shutdown()`` (the engine's, or an OTel ``LoggerProvider``'s).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from pydantic import ValidationError
from segment.analytics import Client

from appevents import AppEventsSettings, ConfigurationError
from appevents.exporting import (
    EVENT_NAME_ATTRIBUTE,
    Check,
    EncodedEvent,
    ExportOutcome,
    LogOnce,
    encoded_from_record,
    event_from_json,
    safe_url,
    start_background_thread,
)
from appevents_exporter_segment._answers import DELIVERED, Call, Sent, Verdict, verdict_for
from appevents_exporter_segment._diagnose import diagnose_segment
from appevents_exporter_segment._library import Message, ReportingConsumer, wait_drained, wait_for_room, withdraw
from appevents_exporter_segment._mapping import SegmentTrack, track_for_event
from appevents_exporter_segment._redaction import (
    REDACTED,
    SEGMENT_LOGGER_NAME,
    SecretRedactingFilter,
    redact,
)
from appevents_exporter_segment._settings import SegmentExporterSettings

__all__ = ["SegmentExporter", "SegmentExporterStats", "create_segment_exporter"]

_logger = logging.getLogger("appevents.segment")

_SHUT_DOWN = "the Segment exporter is shut down"


@dataclass(frozen=True)
class SegmentExporterStats:
    """Counters of one :class:`SegmentExporter`, per message: ``accepted = delivered + failed + undelivered +
    pending``.

    Exports report ``failed`` and ``invalid`` as ``failed``, ``undelivered`` and ``dropped`` as ``retry``. A message
    still in flight when its export returned (as retry) is counted here by the answer it gets later.
    """

    #: Messages handed to the library's queue.
    accepted: int
    #: Events not sent on purpose: not a mapped lifecycle event, or not an appevents event at all.
    skipped: int
    #: Lifecycle events not queued: the library's queue stayed full until the export's bound, or the exporter
    #: was shut down.
    dropped: int
    #: Lifecycle events that could not become a Segment message (e.g. over Segment's 32 KB message limit).
    invalid: int
    #: Accepted messages Segment refused (4xx other than 408/429/460).
    failed: int
    #: Accepted messages not delivered for now: the library gave up on them (connection errors, 5xx, 408/429/460
    #: after its retry budget), or they were taken back out of its queue unsent (export bound, shutdown).
    undelivered: int
    #: Accepted messages Segment answered with 2xx.
    delivered: int
    #: Accepted messages still queued or in flight.
    pending: int


class SegmentExporter(LogRecordExporter):
    """Send lifecycle events (``event_name`` in the mapping) to Segment as ``track`` calls, with per-event outcomes.

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
        #: Lifecycle name → Segment event name, for the names that are sent.
        self._segment_names = {name: segment for name, segment in self.settings.event_names.items() if segment}
        self._export_timeout_s = self.settings.export_timeout_s()
        self._secrets = SecretRedactingFilter(write_key)
        # Before the client exists: its constructor and consumer already log through "segment".
        logging.getLogger(SEGMENT_LOGGER_NAME).addFilter(self._secrets)
        # One lock for the counters, the messages awaiting an answer, and the wake-ups of waiting exports.
        self._lock = threading.Condition()
        self._counts: Counter[str] = Counter()
        #: messageId → the events in the library's hands with that id, awaiting an answer.
        self._awaiting: dict[str, list[Sent]] = {}
        self._closed = False
        self._log_once = LogOnce(_logger)
        # thread=0: no consumer of the library's own; ours (below) also reports deliveries.
        self._client = Client(write_key, on_error=self._on_send_error, thread=0, **self.settings.client_options())
        # The library's exit hook only stops its consumer; our owner's shutdown() does it, bounded.
        atexit.unregister(self._client.join)
        consumer = ReportingConsumer(
            self._on_delivered,
            queue=self._client.queue,
            write_key=write_key,
            host=self.settings.host,
            on_error=self._on_send_error,
            upload_size=self.settings.batch_size,
            upload_interval=self.settings.upload_interval_ms / 1000,
            retries=self.settings.max_retries,
            timeout=self.settings.timeout_ms / 1000,
            max_total_backoff_duration=self.settings.max_total_backoff_ms / 1000,
        )
        self._client.consumers = [consumer]
        start_background_thread(consumer)

    def __repr__(self) -> str:
        return f"SegmentExporter(host={safe_url(self.settings.host)!r}, write_key={REDACTED!r})"

    @property
    def destination(self) -> str:
        """Where events go, as the durable spool tells destinations apart (an orphan's rows are replayed only to
        the same one): the host and the Segment source, named by a digest of its write key, never the key."""
        key = self.settings.write_key.get_secret_value() if self.settings.write_key is not None else ""
        source = hashlib.sha256(key.encode()).hexdigest()[:16]
        return f"segment {safe_url(self.settings.host)} source:{source}"

    # -- engine thread (publisher's path for accepts) ----------------------------------------------------------
    def accepts(self, event: EncodedEvent) -> bool:
        """Whether ``event`` is for Segment: its lifecycle name (an attribute; no parsing) is mapped."""
        return event.attributes.get(EVENT_NAME_ATTRIBUTE) in self._segment_names

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        """Send the lifecycle events of ``batch`` and wait (bounded) for Segment's answer to each.

        Not listed in the outcome: delivered, or not for Segment (``accepts`` False). ``failed``: refused by
        Segment (``refused:<status>``) or not a valid Segment message (``invalid:…``). ``retry``: the library gave
        up for a transient reason, the queue stayed full, or no answer came within ``export_timeout_s()`` or
        before ``shutdown()``.
        """
        deadline = time.monotonic() + self._export_timeout_s
        call = Call()
        for event in batch:
            if not self.accepts(event):
                self._count("skipped")
                continue
            sent = Sent(event, call)
            call.events.append(sent)
            track = self._track_for(event)
            if isinstance(track, Verdict):
                sent.verdict = track
            else:
                self._send(call, sent, track, deadline)
        with self._lock:
            while call.unanswered and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            if call.unanswered:
                reason = (
                    f"{_SHUT_DOWN} before Segment answered"
                    if self._closed
                    else f"no answer from Segment within {self._export_timeout_s:g} s"
                )
                self._take_back_locked([sent for sent in call.events if sent.verdict is None], reason)
        return self._outcome(call)

    def _track_for(self, event: EncodedEvent) -> SegmentTrack | Verdict:
        try:
            parsed = event_from_json(event.body)
        except ValidationError as exc:
            self._count("invalid")
            self._log_once(
                "invalid-body",
                logging.ERROR,
                "appevents: a lifecycle event's body is not a valid event (%d errors); not sent to Segment",
                exc.error_count(),
            )
            return Verdict("failed", "invalid:body")
        track = track_for_event(
            parsed,
            event.timestamp_ns,
            self.settings,
            default_application=self._default_application,
            default_tenant=self._default_tenant,
        )
        if track is None:  # the attributes said a mapped lifecycle name, the body does not
            self._count("invalid")
            return Verdict("failed", "invalid:event_name")
        return track

    def _send(self, call: Call, sent: Sent, track: SegmentTrack, deadline: float) -> None:
        """Queue ``sent``'s message (waiting for room until ``deadline``); registered before, as the consumer may
        answer before ``track()`` returns."""
        if not wait_for_room(self._client.queue, deadline, lambda: self._closed):
            self._count("dropped")
            full = not self._closed
            if full:
                self._log_once(
                    "queue-full",
                    logging.WARNING,
                    "appevents: the Segment queue stayed full (%d messages) for %g s; events are returned for "
                    "retry (check that Segment is reachable, or raise APPEVENTS_SEGMENT_MAX_QUEUE_SIZE)",
                    self.settings.max_queue_size,
                    self._export_timeout_s,
                )
            sent.verdict = Verdict("retry", "the Segment queue is full" if full else _SHUT_DOWN)
            return
        sent.message_id = track.message_id
        with self._lock:
            self._awaiting.setdefault(sent.message_id, []).append(sent)
            call.unanswered += 1
            self._counts["accepted"] += 1  # now: the consumer may count its answer before track() returns
        try:
            queued, message = self._client.track(
                user_id=track.user_id,
                event=track.event,
                properties=track.properties,
                timestamp=track.timestamp,
                message_id=track.message_id,
            )
        except Exception as exc:  # too large for Segment (RuntimeError), or a value the library refuses
            self._forget(sent, "invalid")
            too_large = isinstance(exc, RuntimeError)
            self._log_once(
                f"invalid:{type(exc).__name__}",
                logging.ERROR,
                "appevents: Segment refused to queue a %r message (%s); it is counted as invalid",
                track.event,
                "over Segment's 32 KB message limit" if too_large else type(exc).__name__,
            )
            sent.verdict = Verdict("failed", "invalid:too_large" if too_large else "invalid:message")
            return
        if not queued:  # another producer filled the queue since we looked
            self._forget(sent, "dropped")
            sent.verdict = Verdict("retry", "the Segment queue is full")
            return
        with self._lock:
            sent.message = message
            if sent.verdict is not None and sent.verdict.kind == "retry":  # taken back by shutdown() meanwhile
                self._counts["undelivered"] += withdraw(self._client.queue, [message])

    def _forget(self, sent: Sent, counter: str) -> None:
        """Stop awaiting ``sent``, which ``track()`` did not queue after all: count it as ``counter`` instead."""
        with self._lock:
            self._unregister_locked(sent)
            self._counts["accepted"] -= 1
            self._counts[counter] += 1

    def _unregister_locked(self, sent: Sent) -> None:
        entries = self._awaiting.get(sent.message_id, [])
        if sent in entries:
            entries.remove(sent)
            if not entries:
                del self._awaiting[sent.message_id]
            sent.call.unanswered -= 1

    def _take_back_locked(self, unanswered: Collection[Sent], reason: str) -> None:
        """Stop awaiting ``unanswered`` (returned for retry with ``reason``) and take their still-queued messages
        back out of the library's queue; those in flight are left to the consumer. Holds ``self._lock``."""
        verdict = Verdict("retry", reason)
        for sent in unanswered:
            self._unregister_locked(sent)
            sent.verdict = verdict
        self._counts["undelivered"] += withdraw(
            self._client.queue, [s.message for s in unanswered if s.message is not None]
        )

    def _outcome(self, call: Call) -> ExportOutcome:
        outcome = ExportOutcome()
        reasons: list[str] = []
        for sent in call.events:
            verdict = sent.verdict
            if verdict is None or verdict.kind == "delivered":
                continue
            if verdict.kind == "failed":
                outcome.failed.append((sent.event, verdict.reason))
            else:
                outcome.retry.append(sent.event)
                if verdict.reason not in reasons:
                    reasons.append(verdict.reason)
        outcome.retry_reason = redact("; ".join(reasons[:3]), self._secrets.secrets)
        return outcome

    def _count(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._counts[counter] += n

    # -- OTel LogRecordExporter --------------------------------------------------------------------------------
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """``export_events`` over the records that carry appevents events (others are skipped, and so are events
        appevents' own ``segment`` exporter delivers, see ``appevents.delivered_by``); FAILURE when any
        lifecycle event was not delivered."""
        events: list[EncodedEvent] = []
        for record in batch:
            event = encoded_from_record(record, exporter="segment")
            if event is None:
                self._count("skipped")
            else:
                events.append(event)
        outcome = self.export_events(events)
        delivered = not (outcome.failed or outcome.dropped or outcome.retry)
        return LogRecordExportResult.SUCCESS if delivered else LogRecordExportResult.FAILURE

    # -- library consumer thread -------------------------------------------------------------------------------
    def _on_delivered(self, batch: Sequence[Message]) -> None:
        self._settle(batch, DELIVERED)

    def _on_send_error(self, error: Exception, batch: Sequence[Message]) -> None:
        verdict = verdict_for(error)
        self._settle(batch, verdict)
        status = getattr(error, "status", None)
        self._log_once(
            f"send:{status if status is not None else type(error).__name__}",
            logging.ERROR,
            "appevents: Segment did not take a batch of %d message(s): %s. They are %s; further failures of this "
            "kind are counted, not logged.",
            len(batch),
            redact(str(error), self._secrets.secrets),
            f"counted as failed ({verdict.reason})" if verdict.kind == "failed" else "returned for retry",
        )

    def _settle(self, batch: Sequence[Message], verdict: Verdict) -> None:
        """Record Segment's answer to ``batch``: counted per message, and handed to the export awaiting it."""
        counter = {"delivered": "delivered", "failed": "failed"}.get(verdict.kind, "undelivered")
        with self._lock:
            self._counts[counter] += len(batch)
            for message in batch:
                message_id = message.get("messageId") if isinstance(message, dict) else None
                entries = self._awaiting.get(message_id) if isinstance(message_id, str) else None
                if not entries:
                    continue  # its export already returned (bound, shutdown)
                sent = next((s for s in entries if s.message is message), entries[0])
                self._unregister_locked(sent)
                sent.verdict = verdict
            self._lock.notify_all()

    # -- control -----------------------------------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until everything queued so far is answered; False if the timeout ran out first.

        The library's consumer waits up to ``upload_interval_ms`` to fill a batch, so a flush can take that long.
        """
        return wait_drained(self._client.queue, timeout_millis / 1000)

    def shutdown(self) -> None:
        """Stop the exporter and the library's consumer thread (bounded) before returning.

        A running ``export_events`` returns at once, its unanswered events as retry (their queued messages taken
        back). Messages queued otherwise get up to ``shutdown_timeout_ms`` to be delivered; then the consumer is
        stopped: it finishes its current request (up to ``timeout_ms``) and re-queues instead of retrying. What is
        still undelivered then is reported in one warning and stays counted as ``pending``.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._take_back_locked(
                [sent for entries in self._awaiting.values() for sent in entries],
                f"{_SHUT_DOWN} before Segment answered",
            )
            self._lock.notify_all()
        if self._client.queue.qsize():
            wait_drained(self._client.queue, self.settings.shutdown_timeout_ms / 1000)
        consumers = self._client.consumers or []
        for consumer in consumers:
            consumer.pause()
        # A paused consumer finishes its current request (bounded by the request timeout) and its batch wait; a
        # backoff between retries ends within 1 s (the library sleeps in 1 s slices).
        join_timeout = self.settings.timeout_ms / 1000 + self.settings.upload_interval_ms / 1000 + 1.0
        for consumer in consumers:
            consumer.join(timeout=join_timeout)
        undelivered = self.stats().pending
        if undelivered:
            _logger.warning(
                "appevents: Segment exporter shut down with %d message(s) undelivered "
                "(check that Segment is reachable)",
                undelivered,
            )
        if any(consumer.is_alive() for consumer in consumers):
            _logger.warning("appevents: the Segment consumer thread did not stop within %g s", join_timeout)
        else:
            logging.getLogger(SEGMENT_LOGGER_NAME).removeFilter(self._secrets)

    def diagnose(self, timeout_s: float) -> list[Check]:
        """``appevents doctor``'s checks for this exporter: the write key is set (shown as ``****``), the host
        answers HTTP within ``timeout_s`` (no event sent). See :mod:`appevents_exporter_segment._diagnose`."""
        return diagnose_segment(self.settings, timeout_s)

    def stats(self) -> SegmentExporterStats:
        """The counters now (see :class:`SegmentExporterStats`)."""
        with self._lock:
            c = dict(self._counts)
        accepted, delivered = c.get("accepted", 0), c.get("delivered", 0)
        failed, undelivered = c.get("failed", 0), c.get("undelivered", 0)
        return SegmentExporterStats(
            accepted=accepted,
            skipped=c.get("skipped", 0),
            dropped=c.get("dropped", 0),
            invalid=c.get("invalid", 0),
            failed=failed,
            undelivered=undelivered,
            delivered=delivered,
            # Not the library's unfinished_tasks, which drops only after on_error and our delivery count.
            pending=accepted - delivered - failed - undelivered,
        )


def _read_settings() -> SegmentExporterSettings:
    try:
        return SegmentExporterSettings()
    except ValidationError as exc:
        # SecretStr keeps the key out of the message; other fields name themselves and the rule.
        raise ConfigurationError(f"invalid Segment exporter settings (APPEVENTS_SEGMENT_*): {exc}") from None


#: Says the factory's "disabled" warning once per process.
_SAID_ONCE = LogOnce(_logger)


def create_segment_exporter(settings: AppEventsSettings) -> SegmentExporter | None:
    """``segment`` exporter factory; None when APPEVENTS_SEGMENT_WRITE_KEY is not set (a warning, once per process:
    a pipeline rebuilt by ``configure()`` or in a forked child does not repeat it)."""
    segment_settings = _read_settings()
    if segment_settings.write_key is None or not segment_settings.write_key.get_secret_value():
        _SAID_ONCE(
            "no-write-key",
            logging.WARNING,
            "appevents: Segment exporter disabled: APPEVENTS_SEGMENT_WRITE_KEY is not set (APPEVENTS_EXPORTERS names "
            "segment); lifecycle events are not sent to Segment",
        )
        return None
    return SegmentExporter(segment_settings, app_settings=settings)
