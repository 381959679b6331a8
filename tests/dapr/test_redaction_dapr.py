"""Redaction end to end through Dapr: the binding payload the sidecar gets, and the HTTP body behind it, carry
``"[REDACTED]"`` where the event had credential-like keys (any depth, any case) — never the value."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from appevents import Event, EventStore
from appevents._redaction import REDACTED
from appevents_exporter_dapr import DaprExporter
from support.dapr_sidecar import DaprSidecar, HttpReceiver

pytestmark = pytest.mark.timeout(60)

SECRET = "dapr-s3cr3t-4be0"


def test_the_dapr_binding_payload_carries_redacted_data(
    sidecar: DaprSidecar,
    receiver: HttpReceiver,
    dapr_env: Callable[..., None],
    pipeline: Callable[[], DaprExporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar)
    pipeline()
    data = {
        "order_id": "o-1",
        "Client_Secret": SECRET,
        "request": {"headers": [{"Authorization": f"Bearer {SECRET}"}, {"accept": "json"}]},
    }
    event = Event(event_type="order.received", data=data)

    EventStore.publish(event)
    assert EventStore.flush_sync(30)

    expected = {
        "order_id": "o-1",
        "Client_Secret": REDACTED,
        "request": {"headers": [{"Authorization": REDACTED}, {"accept": "json"}]},
    }
    [call] = sidecar.binding_calls
    assert json.loads(call.data)["data"] == expected
    [request] = receiver.requests
    assert json.loads(request.body)["data"] == expected
    for seen in (call.data, request.body, json.dumps(call.metadata).encode(), caplog.text.encode()):
        assert SECRET.encode() not in seen
