"""How an :class:`~appevents.Event` travels as an OpenTelemetry log record, and back.

Mapping (lossless; exporters and the OTLP bridge rely on it):

=====================  ===========================================================================
log record field       value
=====================  ===========================================================================
``event_name``         ``event.event_type`` — the OTel event name identifies the class of event
``body``               ``event.model_dump_json()`` — the whole event, so ``Event.model_validate_json``
                       rebuilds it exactly (ints stay ints, key order kept)
``timestamp``          publish time in ns (``workflow.now()`` inside workflows)
``severity``           INFO
attribute ``appevents.event_id``    ``event.event_id`` (marks the record as an appevents event)
attribute ``appevents.event_name``  ``event.event_name``, only for lifecycle events
attribute ``appevents.topic``       ``event.metadata.topic_name`` (routing without parsing the body)
trace / span ids       from the OTel context current at publish time
=====================  ===========================================================================

Records the ``otel`` exporter emits into the global logs pipeline also carry ``appevents.delivered_by``: the
exporters that deliver the same event from appevents' own pipeline (see :mod:`appevents._otel_route`).

Attributes are kept few on purpose: each one costs the OTel SDK about 1.7 µs (on an exporter thread), and the body
already carries every field.
"""

from __future__ import annotations

import time

from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord

from appevents._encoded import EncodedEvent
from appevents._models import STORED_EVENT_CONTEXT, Event

__all__ = [
    "DELIVERED_BY_ATTRIBUTE",
    "EVENT_ID_ATTRIBUTE",
    "EVENT_NAME_ATTRIBUTE",
    "LOGGER_NAME",
    "TOPIC_ATTRIBUTE",
    "encode_event",
    "encoded_from_record",
    "event_from_json",
    "event_from_record",
    "event_json_from_record",
    "record_attributes",
]

LOGGER_NAME = "appevents"
EVENT_ID_ATTRIBUTE = "appevents.event_id"
EVENT_NAME_ATTRIBUTE = "appevents.event_name"
TOPIC_ATTRIBUTE = "appevents.topic"
#: Comma list of the appevents exporters that deliver this event themselves (set by the ``otel`` exporter).
DELIVERED_BY_ATTRIBUTE = "appevents.delivered_by"

AnyLogRecord = ReadableLogRecord | ReadWriteLogRecord | LogRecord


def record_attributes(event: Event) -> dict[str, str]:
    """The attributes put on an event's log record (and on its span event); unset values are left out."""
    attributes = {EVENT_ID_ATTRIBUTE: event.event_id}
    if event.event_name is not None:
        attributes[EVENT_NAME_ATTRIBUTE] = event.event_name
    if event.metadata.topic_name is not None:
        attributes[TOPIC_ATTRIBUTE] = event.metadata.topic_name
    return attributes


def _api_record(record: AnyLogRecord) -> LogRecord:
    if isinstance(record, ReadableLogRecord | ReadWriteLogRecord):
        return record.log_record
    return record


def event_json_from_record(record: AnyLogRecord) -> str | None:
    """The event JSON carried by ``record``, or None when the record is not an appevents event.

    Exporters may be attached to a shared LoggerProvider (``opentelemetry-instrument``); they skip other logs.
    """
    log_record = _api_record(record)
    attributes = log_record.attributes
    if not attributes or EVENT_ID_ATTRIBUTE not in attributes or not isinstance(log_record.body, str):
        return None
    return log_record.body


def event_from_json(body: str | bytes) -> Event:
    """Rebuild an event from its JSON as published (the size cap in force now is not re-applied)."""
    return Event.model_validate_json(body, context={STORED_EVENT_CONTEXT: True})


def event_from_record(record: AnyLogRecord) -> Event | None:
    """Rebuild the :class:`Event` a log record carries (None for records that are not appevents events)."""
    body = event_json_from_record(record)
    return None if body is None else event_from_json(body)


def encoded_from_record(record: AnyLogRecord, *, exporter: str | None = None) -> EncodedEvent | None:
    """The :class:`~appevents.exporting.EncodedEvent` a log record carries (None for other records).

    For exporters used as plain OTel ``LogRecordExporter`` s (``OTEL_LOGS_EXPORTER=appevents_dapr``): their
    ``export(records)`` turns records into encoded events and calls ``export_events``. The engine never needs it.
    ``exporter``: the exporter's name in ``APPEVENTS_EXPORTERS`` (``dapr``, ``segment``); None is returned, too,
    for a record whose ``appevents.delivered_by`` names it — appevents' own pipeline delivers that event there
    already, so delivering it from the global pipeline as well would send it twice.
    """
    log_record = _api_record(record)
    body = event_json_from_record(log_record)
    if body is None:
        return None
    attributes = {str(k): str(v) for k, v in (log_record.attributes or {}).items()}
    delivered_by = attributes.pop(DELIVERED_BY_ATTRIBUTE, "")
    if exporter is not None and exporter in delivered_by.split(","):
        return None
    return EncodedEvent(
        event_id=attributes[EVENT_ID_ATTRIBUTE],
        event_type=log_record.event_name or "",
        body=body.encode(),
        attributes=attributes,
        timestamp_ns=log_record.timestamp or 0,
        trace_id=log_record.trace_id or 0,
        span_id=log_record.span_id or 0,
        trace_flags=int(log_record.trace_flags or 0),
    )


def encode_event(event: Event, timestamp_ns: int | None = None) -> EncodedEvent:
    """``event`` as the engine hands it to exporters: its JSON and record attributes, no trace context. For tests
    and tools that drive an exporter directly; publishing does the same inline (with the publisher's context)."""
    return EncodedEvent(
        event_id=event.event_id,
        event_type=event.event_type,
        body=event.model_dump_json().encode(),
        attributes=record_attributes(event),
        timestamp_ns=time.time_ns() if timestamp_ns is None else timestamp_ns,
    )
