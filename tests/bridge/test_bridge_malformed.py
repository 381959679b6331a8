"""Every request gets an answer (real bridge processes): malformed OTLP — odd OTLP/JSON shapes, nesting deeper
than any parser's stack, mutated protobuf — is answered 400 / ``INVALID_ARGUMENT`` naming the problem, in the
request's encoding; a record that cannot be read is refused alone and the valid event beside it is delivered; a
property-based fuzz test over OTLP/JSON and protobuf mutations finds a well-formed answer every time and a bridge
that stays up."""

from __future__ import annotations

import http.client
import json
import random
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

from support.bridge_process import TOKEN, BridgeProcess, delivered, events, post, request_of
from support.dapr_sidecar import HttpReceiver
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
_DEEP_EVENT = (
    '{"event_type":"order.received","event_id":"6f1c1c1e-9d5e-4c51-9f0e-0d5c1e1e1e1e","data":{"x":'
    + "[" * 1000
    + "]" * 1000
    + "}}"
)


def _grpc_export(port: int, body: bytes) -> tuple[grpc.StatusCode, bytes, str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = channel.unary_unary(_EXPORT)(body, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=20)
        except grpc.RpcError as error:
            return error.code(), b"", error.details() or ""
        return grpc.StatusCode.OK, answer, ""


def _json_request(*records: dict[str, Any]) -> dict[str, Any]:
    return {"resourceLogs": [{"scopeLogs": [{"logRecords": list(records)}]}]}


def test_a_record_nested_too_deeply_is_refused_alone_and_the_valid_event_beside_it_delivered(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver
) -> None:
    bridge = start_bridge()
    valid = [e.model_dump_json() for e in events(3, tag="beside-deep")]
    # protobuf over HTTP, protobuf over gRPC, OTLP/JSON over HTTP
    answer = post(bridge.http_url, request_of(_DEEP_EVENT, valid[0]))
    assert answer.status == 200
    partial = ExportLogsServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_log_records == 1
    assert "nested too deeply" in partial.error_message
    code, body, _ = _grpc_export(bridge.grpc_port, request_of(valid[1], _DEEP_EVENT))
    assert code is grpc.StatusCode.OK
    assert ExportLogsServiceResponse.FromString(body).partial_success.rejected_log_records == 1
    document = _json_request({"body": {"stringValue": _DEEP_EVENT}}, {"body": {"stringValue": valid[2]}})
    answer = post(bridge.http_url, json.dumps(document).encode(), content_type="application/json")
    assert answer.status == 200
    assert int(json.loads(answer.body)["partialSuccess"]["rejectedLogRecords"]) == 1
    expected = {json.loads(v)["event_id"] for v in valid}
    assert wait_until(lambda: {e["event_id"] for e in delivered(receiver)} == expected, 20)


def test_odd_otlp_json_shapes_are_answered_400_in_json_naming_the_problem(
    start_bridge: Callable[..., BridgeProcess],
) -> None:
    bridge = start_bridge()
    shapes: list[tuple[bytes, str]] = [
        (b'{"resourceLogs":"x"}', "resourceLogs is a JSON string"),
        (b'{"resourceLogs":[1]}', "resourceLogs[] is a JSON number"),
        (b'{"resourceLogs":[{"scopeLogs":{"a":1}}]}', "scopeLogs is a JSON object"),
        (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[null]}]}]}', "logRecords[] holds a JSON null"),
        (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}', "traceId"),
        (b"[]", "the request is a JSON array"),
        (b'"resourceLogs"', "the request is a JSON string"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a":' * 100_000, "nested too deeply"),
        (b"{not json", "not JSON"),
    ]
    for body, named in shapes:
        answer = post(bridge.http_url, body, content_type="application/json")
        assert answer.status == 400, body[:60]
        assert answer.headers.get("Content-Type") == "application/json"
        status = json_format.Parse(answer.body, Status())
        assert named in status.message, (body[:60], status.message)
    assert post(bridge.http_url, request_of(*[e.model_dump_json() for e in events(1)])).status == 200


def test_every_refusal_is_answered_in_the_requests_encoding(start_bridge: Callable[..., BridgeProcess]) -> None:
    bridge = start_bridge(APPEVENTS_BRIDGE_MAX_BODY_BYTES="1000")
    document = json.dumps(_json_request({"body": {"stringValue": "x" * 2000}})).encode()
    cases = [
        ({"token": None}, "/v1/logs", 401),
        ({"token": "wrong"}, "/v1/logs", 401),
        ({}, "/v1/traces", 404),
        ({}, "/v1/logs", 413),
    ]
    for options, path, expected in cases:
        for content_type in ("application/json", "application/x-protobuf"):
            connection = http.client.HTTPConnection("127.0.0.1", bridge.http_port, timeout=20)
            token = options.get("token", TOKEN)
            headers = {"Content-Type": content_type} | ({"Authorization": f"Bearer {token}"} if token else {})
            connection.request("POST", path, body=document, headers=headers)
            response = connection.getresponse()
            body = response.read()
            connection.close()
            assert response.status == expected, (path, options, content_type)
            assert response.getheader("Content-Type") == content_type
            if content_type == "application/json":
                message = json_format.Parse(body, Status()).message
            else:
                message = Status.FromString(body).message
            assert message


# -- the fuzz test -------------------------------------------------------------------------------------------------
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "resourceLogs",
        "scopeLogs",
        "logRecords",
        "body",
        "stringValue",
        "kvlistValue",
        "arrayValue",
        "values",
        "attributes",
        "key",
        "value",
        "traceId",
        "spanId",
        "timeUnixNano",
        "eventName",
        "intValue",
        "bytesValue",
    ]
)


def _base_json() -> dict[str, Any]:
    [event] = events(1, tag="fuzz")
    return _json_request(
        {
            "timeUnixNano": "1764633600000000000",
            "body": {"stringValue": event.model_dump_json()},
            "traceId": "5b8efff798038103d269b633813fc60c",
            "attributes": [{"key": "appevents.event_id", "value": {"stringValue": event.event_id}}],
        },
        {"eventName": "order.received", "body": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": 1}}]}}},
    )


def _mutate_json(document: Any, rng: random.Random, replacement: Any, key: str) -> Any:
    """``document`` with one node (a random walk down) replaced by ``replacement`` or given a ``key`` member."""
    if rng.random() < 0.25 or not isinstance(document, (dict, list)) or not document:
        if isinstance(document, dict) and rng.random() < 0.5:
            return {**document, key: replacement}
        return replacement
    if isinstance(document, dict):
        name = rng.choice(sorted(document))
        return {**document, name: _mutate_json(document[name], rng, replacement, key)}
    index = rng.randrange(len(document))
    return [*document[:index], _mutate_json(document[index], rng, replacement, key), *document[index + 1 :]]


def _base_protobuf() -> bytes:
    [event] = events(1, tag="fuzz")
    kv = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="a", value=AnyValue(int_value=1))]))
    return request_of(event.model_dump_json(), kv, attributes={"appevents.event_id": event.event_id})


def _mutate_bytes(data: bytes, rng: random.Random, noise: bytes) -> bytes:
    position = rng.randrange(len(data) + 1)
    match rng.randrange(4):
        case 0:  # flip a byte
            if position < len(data):
                return data[:position] + bytes([data[position] ^ (1 << rng.randrange(8))]) + data[position + 1 :]
            return data + noise
        case 1:  # cut
            return data[:position]
        case 2:  # insert
            return data[:position] + noise + data[position:]
        case _:  # repeat a slice
            end = min(len(data), position + rng.randrange(1, 64))
            return data[:end] + data[position:end] * rng.randrange(1, 50) + data[end:]


def _well_formed(status: int, body: bytes, content_type: str, json_encoded: bool) -> None:
    assert status in (200, 400, 413), status
    assert content_type == ("application/json" if json_encoded else "application/x-protobuf")
    if status == 200:
        if json_encoded:
            json_format.Parse(body, ExportLogsServiceResponse())
        else:
            ExportLogsServiceResponse.FromString(body)
    else:
        status_message = json_format.Parse(body, Status()) if json_encoded else Status.FromString(body)
        assert status_message.message


@pytest.fixture
def fuzzed_bridge(start_bridge: Callable[..., BridgeProcess]) -> BridgeProcess:
    return start_bridge()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32),
    mutations=st.integers(1, 4),
    json_encoded=st.booleans(),
    replacement=_json_values,
    key=_keys,
    noise=st.binary(min_size=1, max_size=16),
)
def test_fuzzed_requests_always_get_a_well_formed_answer_and_the_bridge_stays_up(
    fuzzed_bridge: BridgeProcess,
    seed: int,
    mutations: int,
    json_encoded: bool,
    replacement: Any,
    key: str,
    noise: bytes,
) -> None:
    rng = random.Random(seed)
    if json_encoded:
        document: Any = _base_json()
        for _ in range(mutations):
            document = _mutate_json(document, rng, replacement, key)
        body = json.dumps(document).encode()
    else:
        body = _base_protobuf()
        for _ in range(mutations):
            body = _mutate_bytes(body, rng, noise)
    content_type = "application/json" if json_encoded else "application/x-protobuf"
    answer = post(fuzzed_bridge.http_url, body, content_type=content_type)
    _well_formed(answer.status, answer.body, answer.headers.get("Content-Type", ""), json_encoded)
    if not json_encoded:
        code, _, _ = _grpc_export(fuzzed_bridge.grpc_port, body)
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert fuzzed_bridge.proc is not None and fuzzed_bridge.proc.poll() is None, "the bridge died"
