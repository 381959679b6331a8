"""Segment keeps receiving when the Dapr exporter is configured next to it but no sidecar answers.

The application-sdk ``EventStore``'s promise (the application keeps running when Dapr is absent) seen from the
other destination: with ``APPEVENTS_EXPORTERS=dapr,segment`` and the Dapr endpoints pointing at a closed loopback
port, every lifecycle event still reaches Segment, ``publish`` never raises, and the Dapr exporter counts its events
as failed.
"""

from __future__ import annotations

import socket

import pytest
from segment_events import lifecycle_event

from appevents import ApplicationEventNames, EventStore, WorkflowStates, configure
from appevents_exporter_dapr import DaprExporter
from support.segment_receiver import SegmentReceiver

pytestmark = pytest.mark.timeout(60)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dapr_sidecar_absent(segment_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dapr configured the way a deployment would, pointing at a sidecar that is not there; short retries."""
    port = closed_port()
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "dapr,segment")
    monkeypatch.setenv("DAPR_GRPC_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.setenv("DAPR_HTTP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("APPEVENTS_DAPR_HEALTH_PROBE_TIMEOUT_S", "0.2")
    monkeypatch.setenv("APPEVENTS_DAPR_RETRY_INITIAL_BACKOFF_S", "0.02")
    monkeypatch.setenv("APPEVENTS_DAPR_RETRY_MAX_BACKOFF_S", "0.05")
    monkeypatch.setenv("APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S", "0.2")
    for name in ("APPEVENTS_AUTH_TOKEN_URL", "APPEVENTS_AUTH_CLIENT_ID", "APPEVENTS_AUTH_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)


def test_segment_receives_every_lifecycle_event_while_the_dapr_sidecar_is_unreachable(
    dapr_sidecar_absent: None, segment_receiver: SegmentReceiver
) -> None:
    unpublished_before = EventStore.unpublished_count()
    pipeline = configure()  # from the environment: APPEVENTS_EXPORTERS=dapr,segment
    try:
        assert sorted(pipeline.channels) == ["dapr", "segment"]
        dapr = pipeline.exporter("dapr")
        assert isinstance(dapr, DaprExporter)
        events = [lifecycle_event(ApplicationEventNames.WORKFLOW_START, workflow_id=f"invoice-{n}") for n in range(10)]
        events += [lifecycle_event(ApplicationEventNames.ACTIVITY_START, workflow_id=f"invoice-{n}") for n in range(10)]
        events += [lifecycle_event(ApplicationEventNames.ACTIVITY_END, workflow_id=f"invoice-{n}") for n in range(10)]
        events += [
            lifecycle_event(
                ApplicationEventNames.WORKFLOW_END, state=WorkflowStates.COMPLETED, workflow_id=f"invoice-{n}"
            )
            for n in range(10)
        ]

        for event in events:
            EventStore.publish(event)  # raises nothing: a failure here fails the test

        assert segment_receiver.wait_for_messages(len(events), timeout=30)
        assert EventStore.flush_sync(30)
        assert sorted(m["messageId"] for m in segment_receiver.messages) == sorted(e.event_id for e in events)
        assert {m["event"] for m in segment_receiver.messages} == {
            "workflow_started",
            "activity_started",
            "activity_ended",
            "workflow_completed",
        }
        stats = dapr.stats()
        assert (stats.delivered, stats.returned, stats.calls) == (0, len(events), 0)
        engine = EventStore.stats()["dapr"]
        assert (engine.delivered, engine.failed, engine.failed_reasons) == (
            0,
            len(events),
            {"unavailable": len(events)},
        )
        assert EventStore.unpublished_count() == unpublished_before
    finally:
        EventStore.shutdown(timeout_s=10)
