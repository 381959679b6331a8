"""What the bridge refuses, and that a refusal never costs a valid request its events: no or a wrong token (401 /
UNAUTHENTICATED), a body over the limit (413 / RESOURCE_EXHAUSTED), a malformed body (400 / INVALID_ARGUMENT), a
request mixing valid and invalid events (partial success: the valid ones delivered), no room (429 with a retry
hint)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable

import grpc
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

from support.bridge_process import TOKEN, BridgeProcess, delivered, events, post, request_of
from support.dapr_sidecar import HttpReceiver
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def _bodies(count: int, tag: str) -> list[str]:
    return [e.model_dump_json() for e in events(count, tag=tag)]


def _grpc_export(port: int, body: bytes, token: str | None = TOKEN) -> tuple[grpc.StatusCode, bytes]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(_EXPORT)
        metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
        try:
            answer = call(body, metadata=metadata, timeout=20)
        except grpc.RpcError as error:
            return error.code(), b""
        return grpc.StatusCode.OK, answer


def test_token_body_limit_and_malformed_bodies_are_refused_and_valid_requests_alongside_lose_nothing(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver
) -> None:
    bridge = start_bridge(APPEVENTS_BRIDGE_MAX_BODY_BYTES=str(64 * 1024))
    url = bridge.http_url
    valid_ids: list[str] = []
    answers: list[int] = []

    def send_valid(round_: int) -> None:
        bodies = _bodies(50, f"valid-{round_}")
        valid_ids.extend(json.loads(b)["event_id"] for b in bodies)
        answers.append(post(url, request_of(*bodies)).status)

    senders = [threading.Thread(target=send_valid, args=(i,)) for i in range(6)]
    for sender in senders:
        sender.start()
    one = request_of(*_bodies(1, "refused"))
    # no token, a wrong token (HTTP and gRPC)
    no_token = post(url, one, token=None)
    assert no_token.status == 401
    assert no_token.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert post(url, one, token="wrong").status == 401
    assert _grpc_export(bridge.grpc_port, one, token=None)[0] is grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_export(bridge.grpc_port, one, token="wrong")[0] is grpc.StatusCode.UNAUTHENTICATED
    # over the limit: refused by its length (HTTP), by gRPC's message limit, and once decompressed (a gzip bomb)
    large = request_of(*_bodies(400, "large"))
    assert len(large) > 64 * 1024
    too_large = post(url, large)
    assert too_large.status == 413
    assert "limit" in Status.FromString(too_large.body).message
    assert _grpc_export(bridge.grpc_port, large)[0] is grpc.StatusCode.RESOURCE_EXHAUSTED
    bomb = request_of("{" + " " * (1024 * 1024) + "}")
    assert post(url, bomb, gzipped=True).status == 413
    # malformed: not protobuf, not JSON, wrong content type
    garbage = b"\xff\xff\xff\xff not a protobuf"
    bad = post(url, garbage)
    assert bad.status == 400
    assert "protobuf" in Status.FromString(bad.body).message
    assert _grpc_export(bridge.grpc_port, garbage)[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert post(url, b"{not json", content_type="application/json").status == 400
    assert post(url, one, content_type="text/plain").status == 415

    for sender in senders:
        sender.join(30)
    assert answers == [200] * 6
    wait_until(lambda: len(delivered(receiver)) >= len(valid_ids), timeout_s=30)
    arrived = [e["event_id"] for e in delivered(receiver)]
    assert sorted(arrived) == sorted(valid_ids)  # every valid event once, none of the refused ones
    assert bridge.terminate() == 0


def test_a_request_mixing_valid_and_invalid_events_is_answered_with_partial_success(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver
) -> None:
    bridge = start_bridge()
    good = _bodies(5, "good")
    bad_type = json.loads(good[0]) | {"event_type": "Not A Type", "event_id": "4b1f8a52-8f7e-4a0c-9d64-2c3b1d7e6f10"}
    no_id = {k: v for k, v in json.loads(good[1]).items() if k != "event_id"}
    not_an_event = "GET /index.html 200"  # another log sharing the pipeline: ignored, not refused
    structured = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="amount", value=AnyValue(int_value=7))]))
    body = request_of(*good, json.dumps(bad_type), json.dumps(no_id), not_an_event)
    answer = post(bridge.http_url, body)
    assert answer.status == 200
    response = ExportLogsServiceResponse.FromString(answer.body)
    assert response.partial_success.rejected_log_records == 2
    assert "event_type" in response.partial_success.error_message
    assert "event_id" in response.partial_success.error_message

    # an OTel event record (event_name + the documented attributes, data as the body map) is an event too
    record = request_of(
        structured,
        event_name="payment.processed",
        attributes={"appevents.event_id": "0f8e4c1a-3b2d-4e5f-8a9b-1c2d3e4f5a6b", "appevents.topic": "payments"},
    )
    assert post(bridge.http_url, record).status == 200

    wait_until(lambda: len(delivered(receiver)) >= 6, timeout_s=30)
    arrived = {e["event_id"]: e for e in delivered(receiver)}
    assert set(arrived) == {json.loads(b)["event_id"] for b in good} | {"0f8e4c1a-3b2d-4e5f-8a9b-1c2d3e4f5a6b"}
    payment = arrived["0f8e4c1a-3b2d-4e5f-8a9b-1c2d3e4f5a6b"]
    assert payment["event_type"] == "payment.processed"
    assert payment["data"] == {"amount": 7}
    assert payment["metadata"]["topic_name"] == "payments"
    assert payment["metadata"]["created_timestamp"] is None  # not filled in by the bridge
    assert bridge.terminate() == 0


def test_no_room_is_answered_429_with_a_retry_hint_and_nothing_acknowledged_is_lost(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver
) -> None:
    receiver.delay_s = 0.2  # a slow destination: the queue of 60 fills up
    bridge = start_bridge(APPEVENTS_MAX_QUEUE_SIZE="60", APPEVENTS_BRIDGE_ACK_TIMEOUT_S="30")
    acknowledged: list[str] = []
    statuses: list[int] = []
    retry_after: set[str] = set()
    lock = threading.Lock()

    def send(round_: int) -> None:
        bodies = _bodies(40, f"busy-{round_}")
        answer = post(bridge.http_url, request_of(*bodies), timeout_s=60)
        with lock:
            statuses.append(answer.status)
            if answer.status == 200:
                acknowledged.extend(json.loads(b)["event_id"] for b in bodies)
            elif answer.status == 429:
                retry_after.add(answer.headers.get("Retry-After", ""))

    senders = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    assert 429 in statuses and 200 in statuses, statuses
    assert set(statuses) <= {200, 429}
    assert retry_after == {"1"}
    wait_until(lambda: len(delivered(receiver)) >= len(acknowledged), timeout_s=30)
    assert sorted(e["event_id"] for e in delivered(receiver)) == sorted(acknowledged)
    assert bridge.terminate() == 0
    # Back-pressure is counted, not logged per request (\b: a listening port such as 45429 is not a status).
    assert not re.search(r"\b429\b|RESOURCE_EXHAUSTED", bridge.log())
