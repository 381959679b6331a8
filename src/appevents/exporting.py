"""The one declared exporter interface: everything an exporter may use, and nothing else.

An exporter distribution (``appevents-exporter-dapr``, ``appevents-exporter-segment``, or yours) imports only this
module and :mod:`appevents`'s top-level names (``Event``, ``ApplicationEventNames``, ``ConfigurationError``, ...);
a test holds both distributions to it. What is here:

* what the engine hands over and expects back: :class:`EncodedEvent`, :class:`ExportOutcome`,
  :class:`EventExporter`;
* the event behind the bytes: :func:`event_from_json`, and for OpenTelemetry log records
  :func:`encoded_from_record` / :func:`event_json_from_record` / :func:`record_attributes` with the attribute
  names (:data:`EVENT_ID_ATTRIBUTE`, :data:`EVENT_NAME_ATTRIBUTE`, :data:`TOPIC_ATTRIBUTE`);
  :func:`encode_event` for tools and tests that hand events to an exporter directly;
* the settings it may read: :class:`AppEventsSettings` (its own ``APPEVENTS_<NAME>_*`` settings it declares
  itself);
* counting and logging: :class:`DeliveryStats`, :class:`LogOnce` (failures are counted and logged once, not
  per event: :meth:`LogOnce.failure` for "catch, count, log once per exception type");
* threads it starts itself: :func:`start_background_thread`, or :func:`block_process_signals` as a thread
  pool's ``initializer`` (its workers are created by whichever thread submits first). The process's signals then
  go to the application's threads, where their handlers run; the engine's own threads, the one an exporter runs
  on included, are started so. A process started from them inherits the blocked signals: give them back to it
  with ``preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, [])``, or SIGTERM and Ctrl-C will not
  stop it;
* registration: an :class:`ExporterFactory` ``(settings) -> exporter | None`` registered in the
  :data:`EXPORTER_ENTRY_POINT_GROUP` entry-point group; ``appevents doctor`` runs its ``diagnose(timeout_s) ->
  list[Check]`` (:class:`Check`, :func:`safe_url` to show a URL without its credentials).

What the engine does with an exporter. Every event is encoded once, by the publishing caller
(``Event.model_dump_json()`` as UTF-8 bytes), and travels as an :class:`EncodedEvent` from there on. The engine
gives each exporter its own queue (or its own cursor over the durable spool) and one thread; the exporter is called
with a batch and answers, **per event**, what became of it with an :class:`ExportOutcome`:

* delivered — everything not listed otherwise;
* ``failed`` — refused for good (a destination that says "never": too large, invalid, forbidden); counted with
  its reason, never retried, never holding back the events around it;
* ``dropped`` — deliberately not sent (e.g. the destination has no such component); counted with its reason;
* ``retry`` — not settled: the destination is unavailable *now*. Without a spool the engine counts these as
  failed (the exporter has already retried within its own window); with a spool they stay spooled and the
  engine offers them again after a backoff, for as long as it takes.

Optional exporter attributes the engine reads: ``accepts(event) -> bool`` (events it does not take are never
offered nor counted against it; called on the publisher's path, keep it a lookup) and ``max_batch_size`` (the engine's
batch size is capped by it).

Two kinds of exporters plug in:

* :class:`EventExporter` (this module): our exporters (``local``, ``memory``, ``dapr``, ``segment``) implement
  ``export_events`` and take the cheap path: no OpenTelemetry record is built for them, the JSON is sent as it is
  (a JSON round trip is for readers such as ``appevents tail``, never the hot path). They stay
  ``LogRecordExporter`` subclasses too, so ``OTEL_LOGS_EXPORTER=appevents_dapr`` keeps working.
* any OpenTelemetry ``LogRecordExporter`` (OTLP, console, third-party): the engine builds a proper
  ``ReadableLogRecord`` per event on the exporter's thread (``event_name`` = the event type, body = the event
  JSON, the publisher's trace and span ids, the pipeline's resource) and counts the batch by the one result OTel's
  interface gives. Extra ``LogRecordProcessor`` instances given to ``configure()`` get ``on_emit`` the same way.
"""

from appevents._counting import DeliveryStats, LogOnce
from appevents._encoded import Check, EncodedEvent, EventExporter, ExportOutcome, safe_url
from appevents._records import (
    EVENT_ID_ATTRIBUTE,
    EVENT_NAME_ATTRIBUTE,
    TOPIC_ATTRIBUTE,
    encode_event,
    encoded_from_record,
    event_from_json,
    event_json_from_record,
    record_attributes,
)
from appevents._registry import EXPORTER_ENTRY_POINT_GROUP, ExporterFactory
from appevents._settings import AppEventsSettings
from appevents._threads import block_process_signals, start_background_thread

__all__ = [
    "EVENT_ID_ATTRIBUTE",
    "EVENT_NAME_ATTRIBUTE",
    "EXPORTER_ENTRY_POINT_GROUP",
    "TOPIC_ATTRIBUTE",
    "AppEventsSettings",
    "Check",
    "DeliveryStats",
    "EncodedEvent",
    "EventExporter",
    "ExportOutcome",
    "ExporterFactory",
    "LogOnce",
    "block_process_signals",
    "encode_event",
    "encoded_from_record",
    "event_from_json",
    "event_json_from_record",
    "record_attributes",
    "safe_url",
    "start_background_thread",
]
