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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from pydantic import ValidationError

from appevents import _runtime
from appevents._encoded import EncodedEvent
from appevents._models import STORED_EVENT_CONTEXT, Event, field_path
from appevents._records import EVENT_ID_ATTRIBUTE, EVENT_NAME_ATTRIBUTE, TOPIC_ATTRIBUTE, record_attributes
from appevents.bridge._policy import FULL, Grant, Policy, Refused, lone_surrogate

__all__ = [
    "DEFAULT_MAX_RECORDS",
    "BadRequest",
    "Decoded",
    "OtlpLogs",
    "TooLarge",
    "decode_events",
    "decompress",
    "parse_request",
]

#: How many refusal messages one response repeats (the count is always exact).
_MAX_MESSAGES = 3
#: Validation without the size cap: the bridge measures the one encoding it sends instead (same limit, one
#: serialization instead of two).
_UNCAPPED = {STORED_EVENT_CONTEXT: True}
#: Validation only (no redaction): what decoding without a bridge's settings applies.
_NO_POLICY = Policy()
#: ``Event.model_validate_json`` and ``Event.model_dump_json().encode()`` (default arguments) without their per-call
#: argument handling and without the str round trip of the encoding (the publisher's path encodes the same way).
_validate_json = Event.__pydantic_validator__.validate_json
_to_json = Event.__pydantic_serializer__.to_json


class BadRequest(ValueError):
    """The payload is not an OTLP logs request (400 / ``INVALID_ARGUMENT``)."""


class TooLarge(ValueError):
    """The payload, once decompressed, is over the body limit (413 / ``RESOURCE_EXHAUSTED``)."""


def decompress(body: bytes | bytearray, encoding: str, limit: int) -> bytes | bytearray:
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


#: Default of ``APPEVENTS_BRIDGE_MAX_RECORDS``: log records one request may carry (413 beyond).
DEFAULT_MAX_RECORDS = 16_384


class OtlpLogs:
    """The log records of one request, each decoded into a ``LogRecord`` only when :func:`decode_events` reaches
    it: what a request costs in memory is its body plus one record at a time, whatever the records hold."""

    def __init__(self, records: ExportLogsServiceRequest | list[bytes] | list[dict[str, Any]], count: int) -> None:
        self._records = records
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[LogRecord | _Malformed]:
        if isinstance(self._records, ExportLogsServiceRequest):  # parsed whole: the records as they are
            for resource in self._records.resource_logs:
                for scope in resource.scope_logs:
                    yield from scope.log_records
        else:
            for raw in self._records:
                yield _log_record(raw)


class _Malformed:
    """A record refused before it is decoded (alone: the others go on), with its refusal's ``kind`` and ``reason``."""

    def __init__(self, reason: str, kind: str = "malformed") -> None:
        self.reason = reason
        self.kind = kind


#: Protobuf bodies up to this size are parsed in one call (see :func:`_protobuf_records`).
FULL_PARSE_BYTES = 512 * 1024
#: OTLP/JSON objects and arrays allowed per record of the records limit (see :func:`_json_records`).
JSON_CONTAINERS_PER_RECORD = 16
#: A protobuf record longer than this many times ``APPEVENTS_MAX_EVENT_BYTES`` cannot carry an event the bridge
#: would take; it is refused unread (decoding costs up to ~25 bytes of memory per byte of such a record).
MAX_RECORD_FACTOR = 4


def _log_record(raw: bytes | dict[str, Any]) -> LogRecord | _Malformed:
    if isinstance(raw, bytes) and len(raw) > (limit := MAX_RECORD_FACTOR * _runtime.max_event_bytes()):
        return _Malformed(f"the log record is {len(raw)} bytes, over the limit of {limit} bytes", "too_large")
    record = LogRecord()
    try:
        if isinstance(raw, bytes):
            record.ParseFromString(raw)
        else:
            json_format.ParseDict(raw, record, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError) as exc:
        return _Malformed(f"the record is not an OTLP LogRecord: {_first_line(exc)}")
    except RecursionError:
        return _Malformed("the record is nested too deeply")
    return record


def parse_request(body: bytes | bytearray, *, json_encoded: bool, max_records: int = DEFAULT_MAX_RECORDS) -> OtlpLogs:
    """The records of an ``ExportLogsServiceRequest`` in its protobuf or OTLP/JSON encoding; :class:`BadRequest`
    when it is neither, :class:`TooLarge` beyond ``max_records`` records (counted before any record is decoded)."""
    try:
        records: ExportLogsServiceRequest | list[bytes] | list[dict[str, Any]] = (
            _json_records(body, max_records) if json_encoded else _protobuf_records(body, max_records)
        )
    except (BadRequest, TooLarge):
        raise
    except RecursionError:
        raise BadRequest("the body is nested too deeply to be an OTLP logs request") from None
    except Exception as exc:  # whatever the bytes are, the client gets an answer naming the problem
        raise BadRequest(f"the body is not an OTLP logs request: {_first_line(exc)}") from None
    count = _count(records)
    if count > max_records:
        raise _too_many_records(count, max_records)
    return OtlpLogs(records, count)


def _count(records: ExportLogsServiceRequest | list[bytes] | list[dict[str, Any]]) -> int:
    if isinstance(records, ExportLogsServiceRequest):
        return sum(len(scope.log_records) for resource in records.resource_logs for scope in resource.scope_logs)
    return len(records)


def _too_many_records(count: int, max_records: int) -> TooLarge:
    return TooLarge(
        f"the request carries {count} log records, over the limit of {max_records} "
        "(APPEVENTS_BRIDGE_MAX_RECORDS): send smaller batches"
    )


def _protobuf_records(body: bytes | bytearray, max_records: int) -> ExportLogsServiceRequest | list[bytes]:
    """The records of a protobuf request. A body of up to ``FULL_PARSE_BYTES`` is parsed whole (fast: one call,
    at most ~25 times its size in memory); a larger one through a skeleton of the request whose records are bytes,
    each record decoded later on its own (a 4 MiB body of empty records would otherwise become 2 million messages
    before any limit applies)."""
    if len(body) <= FULL_PARSE_BYTES:
        request = ExportLogsServiceRequest()
        try:
            request.ParseFromString(bytes(body))  # a copy of at most FULL_PARSE_BYTES
        except DecodeError:
            raise BadRequest(
                "the body is not a protobuf ExportLogsServiceRequest (its wire format is corrupt)"
            ) from None
        return request  # counted by the caller, in C, before any record is looked at
    skeleton: Any = _SKELETON()
    try:
        skeleton.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"the body is not a protobuf ExportLogsServiceRequest: {exc}") from None
    return [
        record for resource in skeleton.resource_logs for scope in resource.scope_logs for record in scope.log_records
    ]


def _json_records(body: bytes | bytearray, max_records: int) -> list[dict[str, Any]]:
    """The record objects of an OTLP/JSON request (protobuf's JSON mapping: camelCase or the proto field names).

    Each JSON object or array costs Python ~60 bytes or more however short its text (``{}`` is two bytes), so
    before parsing, the ``{`` and ``[`` in the body (those inside strings too: an upper bound) are counted against
    ``JSON_CONTAINERS_PER_RECORD`` per allowed record; an OTLP/JSON record needs about ten."""
    containers = body.count(b"{") + body.count(b"[")
    if containers > (limit := JSON_CONTAINERS_PER_RECORD * max_records):
        raise TooLarge(
            f"the OTLP/JSON body holds {containers} objects and arrays, over the limit of {limit} "
            f"({JSON_CONTAINERS_PER_RECORD} per record of APPEVENTS_BRIDGE_MAX_RECORDS): send smaller batches"
        )
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    records: list[dict[str, Any]] = []
    for resource in _json_list(document, "resourceLogs", "resource_logs", "the request"):
        for scope in _json_list(resource, "scopeLogs", "scope_logs", "resourceLogs[]"):
            for record in _json_list(scope, "logRecords", "log_records", "scopeLogs[]"):
                if not isinstance(record, dict):
                    raise BadRequest(f"logRecords[] holds a JSON {_json_type(record)}, not an object")
                _hex_ids_to_base64(record)
                records.append(record)
    return records


def _json_list(parent: object, name: str, proto_name: str, where: str) -> list[Any]:
    if not isinstance(parent, dict):
        raise BadRequest(f"{where} is a JSON {_json_type(parent)}, not an object")
    value = parent.get(name, parent.get(proto_name))
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{name} is a JSON {_json_type(value)}, not an array")
    return value


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _hex_ids_to_base64(record: dict[str, Any]) -> None:
    """OTLP/JSON writes trace and span ids as hex, protobuf's JSON mapping expects base64 for bytes."""
    for key in ("traceId", "trace_id", "spanId", "span_id"):
        value = record.get(key)
        if isinstance(value, str) and value:
            try:
                record[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise BadRequest(f"{key} {value[:40]!r} is not hex") from None


def _skeleton_class() -> type[Message]:
    """``ExportLogsServiceRequest`` down to the records, each record left as its bytes (same field numbers and wire
    types as opentelemetry/proto/logs/v1/logs.proto; resource and scope kept as bytes, unread)."""
    package = "appevents.bridge.skeleton"
    file = descriptor_pb2.FileDescriptorProto(name="appevents_bridge_skeleton.proto", package=package, syntax="proto3")
    field = descriptor_pb2.FieldDescriptorProto
    layout: dict[str, list[tuple[str, int, str | None]]] = {
        "Request": [("resource_logs", 1, f".{package}.ResourceLogs")],
        "ResourceLogs": [("resource", 1, None), ("scope_logs", 2, f".{package}.ScopeLogs"), ("schema_url", 3, None)],
        "ScopeLogs": [("scope", 1, None), ("log_records", 2, ""), ("schema_url", 3, None)],
    }
    for name, fields in layout.items():
        message = file.message_type.add(name=name)
        for field_name, number, type_name in fields:
            entry = message.field.add(name=field_name, number=number)
            entry.label = field.LABEL_OPTIONAL if type_name is None else field.LABEL_REPEATED
            entry.type = field.TYPE_MESSAGE if type_name else field.TYPE_BYTES
            if type_name:
                entry.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Request"))


_SKELETON = _skeleton_class()


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


def decode_events(
    records: Iterable[LogRecord | _Malformed], policy: Policy = _NO_POLICY, grant: Grant = FULL
) -> Decoded:
    """Every event ``records`` carry, validated, then put through ``policy`` for ``grant`` (see :mod:`._policy`), in
    order; refusals counted with a short message each. Nothing a record holds escapes as an exception: a record
    that cannot be read is refused alone, naming the problem."""
    decoded = Decoded()
    for record in records:
        if isinstance(record, _Malformed):
            decoded.refuse(record.kind, record.reason)
            continue
        try:
            _decode_record(record, decoded, policy, grant)
        except RecursionError:
            decoded.refuse("invalid", "the record's body is nested too deeply")
        except Exception as exc:  # a record no rule above foresaw: refused alone, the others go on
            decoded.refuse("invalid", f"the record cannot be read: {type(exc).__name__}")
    return decoded


def _string_attributes(record: LogRecord) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in record.attributes if kv.key.startswith("appevents.")}


def _decode_record(record: LogRecord, decoded: Decoded, policy: Policy, grant: Grant) -> None:
    # The common case first, and cheaply: a string body holding an event with its id. The attributes are read
    # only when the body is something else (reading them costs more than the rest of this path).
    body = record.body
    kind = body.WhichOneof("value")
    attributes: dict[str, str] | None = None
    text = body.string_value if kind == "string_value" else ""
    try:
        if text[:1] == "{" or (text[:1].isspace() and text.lstrip()[:1] == "{"):
            try:
                event = _validate_json(text, context=_UNCAPPED)
            except ValidationError as exc:
                document = _json_object(text)
                attributes = _string_attributes(record)
                if document is None or "event_type" not in document:
                    if EVENT_ID_ATTRIBUTE not in attributes:
                        decoded.ignored += 1  # a JSON log line, not an event
                        return
                    event = _event_from_parts(record, attributes, document)
                else:
                    where = lone_surrogate(document)
                    if where is not None:  # pydantic says only "invalid JSON" and where in the text
                        raise _Refused(
                            "invalid", f"{where}: a lone surrogate (\\uD800-\\uDFFF) is not Unicode text"
                        ) from None
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
        policy.apply(event, grant)
        encoded = _to_json(event)
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


_Refused = Refused


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
    except json.JSONDecodeError:
        return None  # not JSON: a log line
    except ValueError as exc:  # JSON, but not readable here (an integer of more than 4300 digits)
        raise _Refused("invalid", f"the event's JSON cannot be read: {exc}") from None
    except RecursionError:
        raise _Refused("invalid", "the event's JSON is nested too deeply") from None
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
    where = field_path(error["loc"]) or "event"
    return f"{where}: {error['msg']}"
