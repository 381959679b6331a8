"""appevents → OTLP (HTTP and gRPC) → ``appevents bridge`` (a real subprocess) → Dapr stand-in: every event arrives
equal, as JSON, to what was published — no new id, no new timestamp, no filled gaps."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from appevents import AppEventsSettings, Event, EventStore, configure
from appevents._memory import InMemoryEventExporter
from support.bridge_process import TOKEN, BridgeProcess, delivered, events
from support.dapr_sidecar import HttpReceiver
from support.waiting import wait_until


@pytest.mark.timeout(90)
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_published_events_arrive_unchanged_through_otlp_and_the_bridge(
    protocol: str,
    start_bridge: Callable[..., BridgeProcess],
    receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge = start_bridge()
    endpoint = bridge.http_url if protocol == "http/protobuf" else f"http://127.0.0.1:{bridge.grpc_port}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer {TOKEN}")
    published = InMemoryEventExporter()  # what the publisher's pipeline sent out, enriched, as JSON
    configure(AppEventsSettings(exporters=["otlp"], application_name="publisher"), exporters={"sent": published})

    mixed = [
        *events(300, tag=protocol),
        Event(event_type="workflow.lifecycle", event_name="workflow_end", metadata={"workflow_state": "failed"}),
        Event(event_type="data.batch_processed", data={"unicode": "naïve ☃", "big": 2**53, "neg": -1.5e-7}),
    ]
    for event in mixed:
        assert EventStore.publish(event)
    assert EventStore.flush_sync(30)
    stats = EventStore.stats()["otlp"]
    assert (stats.accepted, stats.delivered) == (len(mixed), len(mixed))

    wait_until(lambda: len(delivered(receiver)) >= len(mixed), timeout_s=30)
    arrived = {e["event_id"]: e for e in delivered(receiver)}
    sent = {e.event_id: json.loads(e.model_dump_json()) for e in published.events}
    assert len(sent) == len(mixed)
    assert arrived == sent  # exact: same ids, same timestamps, same metadata, nothing added
    # the binding call carried the bearer-token-free event JSON array; the bridge's own counters agree
    assert bridge.terminate() == 0
    assert "acknowledged" in bridge.log()
    assert f"{len(mixed)} event(s) acknowledged" in bridge.log()
