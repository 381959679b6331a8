"""Which OTLP records carry an event, and the event each one carries (unit level: no sockets)."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from appevents import Event
from appevents.bridge._decode import BadRequest, TooLarge, decode_events, decompress, parse_request
from support.bridge_process import request_of


def _event() -> Event:
    return Event(
        event_type="order.received",
        event_name="activity_end",
        data={"id": 7, "items": [{"sku": "a", "qty": 2}], "note": None, "ratio": 0.25},
        metadata={"application_name": "shop", "topic_name": "orders", "workflow_state": "completed"},
    )


def _kv(value: object) -> AnyValue:
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=_kv(v)) for k, v in value.items()]))
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_kv(v) for v in value]))
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if value is None:
        return AnyValue()
    return AnyValue(string_value=str(value))


def test_an_event_json_body_comes_back_exactly_with_its_attributes() -> None:
    event = _event()
    decoded = decode_events(parse_request(request_of(event.model_dump_json()), json_encoded=False))
    assert (decoded.rejected, decoded.ignored, len(decoded.events)) == (0, 0, 1)
    encoded = decoded.events[0]
    assert json.loads(encoded.body) == json.loads(event.model_dump_json())
    assert encoded.attributes == {
        "appevents.event_id": event.event_id,
        "appevents.event_name": "activity_end",
        "appevents.topic": "orders",
    }


def test_the_event_as_an_otlp_map_body_is_the_same_event() -> None:
    event = _event()
    body = _kv(json.loads(event.model_dump_json()))
    decoded = decode_events(parse_request(request_of(body), json_encoded=False))
    assert [json.loads(e.body) for e in decoded.events] == [json.loads(event.model_dump_json())]


def test_otlp_json_encoding_with_hex_trace_ids() -> None:
    event = _event()
    document = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1764633600000000000",
                                "body": {"stringValue": event.model_dump_json()},
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    decoded = decode_events(parse_request(json.dumps(document).encode(), json_encoded=True))
    [encoded] = decoded.events
    assert encoded.trace_id == 0x5B8EFFF798038103D269B633813FC60C
    assert encoded.span_id == 0xEEE19B7EC3C1B174
    assert encoded.timestamp_ns == 1764633600000000000
    with pytest.raises(BadRequest, match="traceId"):
        parse_request(
            json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}).encode(),
            json_encoded=True,
        )


def test_other_logs_are_ignored_and_broken_events_refused_one_by_one() -> None:
    event = _event()
    too_big = Event(event_type="a.b", data={"x": 1}).model_dump(mode="json") | {"data": {"x": "y" * 300_000}}
    decoded = decode_events(
        parse_request(
            request_of(
                "plain text log line",
                '{"level": "info", "msg": "a JSON log that is not an event"}',
                event.model_dump_json(),
                json.dumps(json.loads(event.model_dump_json()) | {"event_type": "Bad Type"}),
                json.dumps({k: v for k, v in json.loads(event.model_dump_json()).items() if k != "event_id"}),
                json.dumps(too_big),
                json.dumps(json.loads(event.model_dump_json()) | {"unknown_field": 1}),
            ),
            json_encoded=False,
        )
    )
    assert decoded.ignored == 2
    assert len(decoded.events) == 1
    assert decoded.rejected == 4
    assert decoded.reasons == {"invalid": 2, "too_large": 1, "no_event_id": 1}
    text = " ".join(decoded.messages)
    assert "event_type" in text and "event_id" in text and "over the limit" in text
    assert "y" * 100 not in text  # messages never echo the input


def test_an_event_record_needs_its_type_and_a_json_body() -> None:
    attributes = {"appevents.event_id": "0f8e4c1a-3b2d-4e5f-8a9b-1c2d3e4f5a6b"}
    missing_type = decode_events(parse_request(request_of(_kv({"a": 1}), attributes=attributes), json_encoded=False))
    assert missing_type.reasons == {"no_event_type": 1}
    text_body = decode_events(
        parse_request(request_of("free text", attributes=attributes, event_name="a.b"), json_encoded=False)
    )
    assert text_body.reasons == {"bad_body": 1}
    no_body = decode_events(
        parse_request(request_of(AnyValue(), attributes=attributes, event_name="a.b"), json_encoded=False)
    )
    [encoded] = no_body.events
    assert json.loads(encoded.body)["data"] == {}


def test_decompression_is_bounded() -> None:
    payload = b"x" * 10_000
    assert decompress(gzip.compress(payload), "gzip", 10_000) == payload
    assert decompress(zlib.compress(payload), "deflate", 10_000) == payload
    with pytest.raises(TooLarge):
        decompress(gzip.compress(b"\0" * 50_000_000), "gzip", 1_000_000)  # 49 KiB that would expand to 50 MB
    with pytest.raises(BadRequest, match="Content-Encoding"):
        decompress(payload, "br", 10_000)
    with pytest.raises(BadRequest):
        decompress(b"not gzip", "gzip", 10_000)
    with pytest.raises(BadRequest, match="truncated"):
        decompress(gzip.compress(payload)[:-12], "gzip", 10_000)
