"""OTLP logs in, events out: which records carry an appevents event, and the event each one carries.

A record carries an event when

* its body is the event as JSON — a string holding an ``Event`` JSON object (what appevents puts on its log records,
  and what ``appevents tail --json`` writes one per line, so a collector reading such a file with ``filelog``
  forwards events), or the same object as an OTLP map; or
* it is an OTel event record: ``event_name`` is the event type and the attribute ``appevents.event_id`` holds the
  id; the body (a map, or a string holding a JSON object) is the event's ``data``; the attributes
  ``appevents.event_name`` and ``appevents.topic`` (see :mod:`appevents._records`) fill ``event_name`` and
  ``metadata.topic_name``.

The bridge does not enrich or rewrite: an event must arrive with its own ``event_id`` (none is invented), and what
is sent on is the validated event as it came (``Event.model_dump_json()``: equal, as JSON, to what the publisher
encoded). Records that carry no event (other logs sharing the pipeline) are counted and ignored; events that fail
validation are refused one by one, with the reason, and never hold back the valid ones in the same request.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from pydantic import ValidationError

from appevents import _runtime
from appevents._encoded import EncodedEvent
from appevents._models import STORED_EVENT_CONTEXT, Event
from appevents._records import EVENT_ID_ATTRIBUTE, EVENT_NAME_ATTRIBUTE, TOPIC_ATTRIBUTE, record_attributes

__all__ = ["BadRequest", "Decoded", "TooLarge", "decode_events", "decompress", "parse_request"]

#: How many refusal messages one response repeats (the count is always exact).
_MAX_MESSAGES = 3
#: Validation without the size cap: the bridge measures the one encoding it sends instead (same limit, one
#: serialization instead of two).
_UNCAPPED = {STORED_EVENT_CONTEXT: True}


class BadRequest(ValueError):
    """The payload is not an OTLP logs request (400 / ``INVALID_ARGUMENT``)."""


class TooLarge(ValueError):
    """The payload, once decompressed, is over the body limit (413 / ``RESOURCE_EXHAUSTED``)."""


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded from its ``Content-Encoding`` (``gzip``, ``deflate`` or none), never more than ``limit``
    bytes: a small compressed body cannot expand into more memory than an uncompressed one may take."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r} (gzip, deflate or none)")
    decoder = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid {encoding}: {exc}") from None
    if len(out) > limit or decoder.unconsumed_tail:
        raise TooLarge(f"the decompressed body is over the limit of {limit} bytes")
    if not decoder.eof:
        raise BadRequest(f"the {encoding} body is truncated")
    return out


def parse_request(body: bytes, *, json_encoded: bool) -> ExportLogsServiceRequest:
    """An ``ExportLogsServiceRequest`` from its protobuf or OTLP/JSON encoding; :class:`BadRequest` otherwise."""
    request = ExportLogsServiceRequest()
    if not json_encoded:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadRequest(f"the body is not a protobuf ExportLogsServiceRequest: {exc}") from None
        return request
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise BadRequest("the body is not an OTLP/JSON ExportLogsServiceRequest object")
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (ValueError, json_format.ParseError) as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(f"the body is not an OTLP/JSON ExportLogsServiceRequest: {exc}") from None
    return request


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP/JSON writes trace and span ids as hex, protobuf's JSON mapping expects base64 for bytes."""
    for resource_logs in document.get("resourceLogs") or document.get("resource_logs") or ():
        for scope_logs in resource_logs.get("scopeLogs") or resource_logs.get("scope_logs") or ():
            for record in scope_logs.get("logRecords") or scope_logs.get("log_records") or ():
                if not isinstance(record, dict):
                    continue
                for key in ("traceId", "trace_id", "spanId", "span_id"):
                    value = record.get(key)
                    if isinstance(value, str) and value:
                        try:
                            record[key] = base64.b64encode(bytes.fromhex(value)).decode()
                        except ValueError:
                            raise BadRequest(f"{key} {value[:40]!r} is not hex") from None


@dataclass
class Decoded:
    """The events of one request, and what was not taken."""

    events: list[EncodedEvent] = field(default_factory=list)
    #: Records that carry an event that fails validation (refused, answered as OTLP partial success).
    rejected: int = 0
    #: Records that carry no event (other logs): not for us, ignored.
    ignored: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def refuse(self, kind: str, message: str) -> None:
        self.rejected += 1
        self.reasons[kind] += 1
        if len(self.messages) < _MAX_MESSAGES:
            self.messages.append(message)


def decode_events(request: ExportLogsServiceRequest) -> Decoded:
    """Every event ``request`` carries, validated, in order; refusals counted with a short message each."""
    decoded = Decoded()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                _decode_record(record, decoded)
    return decoded


def _string_attributes(record: LogRecord) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in record.attributes if kv.key.startswith("appevents.")}


def _decode_record(record: LogRecord, decoded: Decoded) -> None:
    # The common case first, and cheaply: a string body holding an event with its id. The attributes are read
    # only when the body is something else (reading them costs more than the rest of this path).
    body = record.body
    kind = body.WhichOneof("value")
    attributes: dict[str, str] | None = None
    text = body.string_value if kind == "string_value" else ""
    try:
        if text[:1] == "{" or (text[:1].isspace() and text.lstrip()[:1] == "{"):
            try:
                event = Event.model_validate_json(text, context=_UNCAPPED)
            except ValidationError as exc:
                document = _json_object(text)
                attributes = _string_attributes(record)
                if document is None or "event_type" not in document:
                    if EVENT_ID_ATTRIBUTE not in attributes:
                        decoded.ignored += 1  # a JSON log line, not an event
                        return
                    event = _event_from_parts(record, attributes, document)
                else:
                    raise exc
            else:
                if "event_id" not in event.model_fields_set:
                    raise _Refused("no_event_id", "the event has no event_id (the bridge does not invent one)")
        elif kind == "kvlist_value":
            document = _plain(body)
            attributes = _string_attributes(record)
            if "event_type" in document:
                event = Event.model_validate(document, context=_UNCAPPED)
                if "event_id" not in event.model_fields_set:
                    raise _Refused("no_event_id", "the event has no event_id (the bridge does not invent one)")
            elif EVENT_ID_ATTRIBUTE in attributes:
                event = _event_from_parts(record, attributes, document)
            else:
                decoded.ignored += 1
                return
        elif kind in (None, "string_value") and EVENT_ID_ATTRIBUTE in (attributes := _string_attributes(record)):
            if text:
                raise _Refused("bad_body", "the body of an event record must be the event or its data as JSON")
            event = _event_from_parts(record, attributes, {})
        else:
            decoded.ignored += 1
            return
        encoded = event.model_dump_json().encode()
        limit = _runtime.max_event_bytes()
        if len(encoded) > limit:
            raise _Refused("too_large", f"the event encodes to {len(encoded)} bytes, over the limit of {limit} bytes")
    except ValidationError as exc:
        decoded.refuse("invalid", _validation_message(exc))
        return
    except _Refused as exc:
        decoded.refuse(exc.kind, exc.message)
        return
    decoded.events.append(
        EncodedEvent(
            event.event_id,
            event.event_type,
            encoded,
            record_attributes(event),
            record.time_unix_nano or record.observed_time_unix_nano or _created_ns(event),
            int.from_bytes(record.trace_id, "big") if len(record.trace_id) == 16 else 0,
            int.from_bytes(record.span_id, "big") if len(record.span_id) == 8 else 0,
            record.flags & 0xFF,
        )
    )


class _Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _event_from_parts(record: LogRecord, attributes: dict[str, str], data: dict[str, Any] | None) -> Event:
    """An OTel event record: the type from ``event_name``, the id and lifecycle name and topic from attributes."""
    if not record.event_name:
        raise _Refused("no_event_type", "an event record needs event_name (the event type)")
    if data is None:
        raise _Refused("bad_body", "the body of an event record must be the event or its data as JSON")
    document: dict[str, Any] = {
        "event_type": record.event_name,
        "event_id": attributes[EVENT_ID_ATTRIBUTE],
        "data": data,
    }
    if EVENT_NAME_ATTRIBUTE in attributes:
        document["event_name"] = attributes[EVENT_NAME_ATTRIBUTE]
    if TOPIC_ATTRIBUTE in attributes:
        document["metadata"] = {"topic_name": attributes[TOPIC_ATTRIBUTE]}
    return Event.model_validate(document, context=_UNCAPPED)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _plain(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as plain JSON data."""
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [_plain(item) for item in value.array_value.values]
    if kind == "bytes_value":
        raise _Refused("bad_body", "bytes values are not JSON")
    return None if kind is None else getattr(value, kind)


def _created_ns(event: Event) -> int:
    created = event.metadata.created_timestamp
    return created * 1_000_000_000 if created else time.time_ns()


def _validation_message(exc: ValidationError) -> str:
    """The first problem, naming the field, without the input value (it may be large, or a secret)."""
    error = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "event"
    return f"{where}: {error['msg']}"
