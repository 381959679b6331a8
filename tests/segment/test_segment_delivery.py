"""The Segment exporter end to end: EventStore.publish → pipeline → segment library → a Segment-like receiver."""

from __future__ import annotations

import base64
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

import pytest
from segment_events import business_event, lifecycle_event

from appevents import ApplicationEventNames, EventStore, Pipeline, WorkflowStates
from appevents.testing import CapturedEvents, InMemoryEventExporter
from appevents_exporter_segment import SegmentExporter
from appevents_exporter_segment._library import ReportingConsumer
from support.segment_receiver import SegmentReceiver
from support.signal_masks import leaves_process_signals_alone
from support.waiting import wait_until

ConfigureSegment = Callable[..., Pipeline]
ExporterOf = Callable[[Pipeline], SegmentExporter]

pytestmark = pytest.mark.timeout(30)


def test_lifecycle_event_is_posted_as_a_track_call_with_basic_auth(
    configure_segment: ConfigureSegment, segment_receiver: SegmentReceiver, write_key: str
) -> None:
    configure_segment()
    event = lifecycle_event(ApplicationEventNames.WORKFLOW_START)
    before = math.floor(time.time() * 1000) / 1000
    EventStore.publish(event)
    after = time.time()

    assert EventStore.flush_sync(10)

    [request] = segment_receiver.requests
    assert (request.method, request.path, request.status) == ("POST", "/v1/batch", 200)
    assert request.problems == ()
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    assert datetime.fromisoformat(request.body["sentAt"])  # type: ignore[index]
    [message] = request.messages
    assert message["type"] == "track"
    assert message["event"] == "workflow_started"
    assert message["userId"] == "billing:acme"
    assert message["messageId"] == event.event_id
    sent_at = datetime.fromisoformat(message["timestamp"])
    assert sent_at.tzinfo is not None
    assert before <= sent_at.timestamp() <= after
    assert message["properties"] == {
        "workflow_state": "running",
        "workflow_type": "InvoiceWorkflow",
        "workflow_id": "invoice-42",
        "workflow_run_id": "run-7",
        "application": "billing",
        "tenant": "acme",
        "event_type": "workflow.lifecycle",
        "event_name": "workflow_start",
    }


def test_failed_workflow_end_says_failed_in_properties(
    configure_segment: ConfigureSegment, segment_receiver: SegmentReceiver
) -> None:
    configure_segment()
    # As the Temporal integration builds it: event_name workflow_end, the true terminal state in the metadata.
    event = lifecycle_event(
        ApplicationEventNames.WORKFLOW_END,
        state=WorkflowStates.FAILED,
        data={"duration_ms": 1234.5, "error_type": "ApplicationError", "details": {"nested": True}},
    )
    EventStore.publish(event)
    assert EventStore.flush_sync(10)

    [message] = segment_receiver.messages
    assert message["event"] == "workflow_completed"
    assert message["messageId"] == event.event_id
    properties = message["properties"]
    assert properties["workflow_state"] == "failed"
    assert properties["duration_ms"] == 1234.5
    assert properties["error_type"] == "ApplicationError"
    assert "details" not in properties  # only scalar data values become properties


def test_all_four_lifecycle_names_use_the_application_sdk_mapping(
    configure_segment: ConfigureSegment, segment_receiver: SegmentReceiver
) -> None:
    configure_segment()
    names = [
        ApplicationEventNames.WORKFLOW_START,
        ApplicationEventNames.ACTIVITY_START,
        ApplicationEventNames.ACTIVITY_END,
        ApplicationEventNames.WORKFLOW_END,
    ]
    events = [lifecycle_event(name) for name in names]
    for event in events:
        EventStore.publish(event)
    assert EventStore.flush_sync(10)

    by_id = {message["messageId"]: message for message in segment_receiver.messages}
    assert [by_id[event.event_id]["event"] for event in events] == [
        "workflow_started",
        "activity_started",
        "activity_ended",
        "workflow_completed",
    ]
    activity_end = by_id[events[2].event_id]["properties"]
    assert (activity_end["activity_type"], activity_end["activity_id"], activity_end["attempt"]) == (
        "charge_card",
        "3",
        2,
    )


def test_user_id_is_one_per_tenant(configure_segment: ConfigureSegment, segment_receiver: SegmentReceiver) -> None:
    configure_segment()
    for tenant in ("north", "south", "north"):
        EventStore.publish(lifecycle_event(ApplicationEventNames.WORKFLOW_START, tenant=tenant))
    EventStore.publish(lifecycle_event(ApplicationEventNames.WORKFLOW_START))  # tenant from settings
    assert EventStore.flush_sync(10)

    assert Counter(message["userId"] for message in segment_receiver.messages) == {
        "billing:north": 2,
        "billing:south": 1,
        "billing:acme": 1,
    }


def test_mapping_and_user_id_template_come_from_settings(
    configure_segment: ConfigureSegment, segment_receiver: SegmentReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "APPEVENTS_SEGMENT_EVENT_NAMES", '{"workflow_end": "Workflow Finished", "worker_start": "Worker Started"}'
    )
    monkeypatch.setenv("APPEVENTS_SEGMENT_USER_ID_TEMPLATE", "tenant-{tenant}")
    configure_segment()
    EventStore.publish(lifecycle_event(ApplicationEventNames.WORKFLOW_END, state=WorkflowStates.COMPLETED))
    EventStore.publish(lifecycle_event(ApplicationEventNames.WORKFLOW_START))
    EventStore.publish(lifecycle_event(ApplicationEventNames.WORKER_START, state=None))
    assert EventStore.flush_sync(10)

    assert sorted((m["event"], m["userId"]) for m in segment_receiver.messages) == [
        ("Worker Started", "tenant-acme"),
        ("Workflow Finished", "tenant-acme"),
        ("workflow_started", "tenant-acme"),
    ]


def test_business_events_are_not_sent_but_reach_the_other_exporters(
    configure_segment: ConfigureSegment, segment_receiver: SegmentReceiver, exporter_of: ExporterOf
) -> None:
    capture = CapturedEvents()
    pipeline = configure_segment("memory", processors=[capture])
    business = business_event()
    worker_start = lifecycle_event(ApplicationEventNames.WORKER_START, state=None)  # lifecycle, but not mapped
    workflow_start = lifecycle_event(ApplicationEventNames.WORKFLOW_START)
    for event in (business, worker_start, workflow_start):
        EventStore.publish(event)
    assert EventStore.flush_sync(10)

    assert [message["messageId"] for message in segment_receiver.messages] == [workflow_start.event_id]
    memory = pipeline.exporter("memory")
    assert isinstance(memory, InMemoryEventExporter)
    all_ids = [business.event_id, worker_start.event_id, workflow_start.event_id]
    assert [event.event_id for event in memory.events] == all_ids
    assert [event.event_id for event in capture.events] == all_ids
    stats = exporter_of(pipeline).stats()
    assert (stats.skipped, stats.accepted, stats.delivered) == (0, 1, 1)  # the engine offers it lifecycle only
    engine = EventStore.stats()
    assert (engine["segment"].accepted, engine["segment"].delivered) == (1, 1)
    assert (engine["memory"].accepted, engine["memory"].delivered) == (3, 3)


def test_503_twice_then_200_is_delivered_once(
    configure_segment: ConfigureSegment, segment_receiver: SegmentReceiver, exporter_of: ExporterOf
) -> None:
    segment_receiver.respond_with(503, 503)
    pipeline = configure_segment()
    event = lifecycle_event(ApplicationEventNames.WORKFLOW_START)
    EventStore.publish(event)
    assert EventStore.flush_sync(20)

    requests = segment_receiver.requests
    assert [request.status for request in requests] == [503, 503, 200]
    assert [request.headers.get("x-retry-count") for request in requests] == [None, "1", "2"]
    assert all(request.messages[0]["messageId"] == event.event_id for request in requests)
    assert [message["messageId"] for message in segment_receiver.messages] == [event.event_id]
    stats = exporter_of(pipeline).stats()
    assert (stats.accepted, stats.failed, stats.pending, stats.delivered) == (1, 0, 0, 1)


def test_400_is_not_retried_and_is_counted(
    configure_segment: ConfigureSegment,
    segment_receiver: SegmentReceiver,
    exporter_of: ExporterOf,
    caplog: pytest.LogCaptureFixture,
) -> None:
    segment_receiver.respond_with(400, 400)
    pipeline = configure_segment()
    EventStore.publish(lifecycle_event(ApplicationEventNames.WORKFLOW_START))
    assert EventStore.flush_sync(10)
    EventStore.publish(lifecycle_event(ApplicationEventNames.WORKFLOW_END))
    assert EventStore.flush_sync(10)

    assert [request.status for request in segment_receiver.requests] == [400, 400]  # one request per batch
    assert segment_receiver.messages == []
    stats = exporter_of(pipeline).stats()
    assert (stats.accepted, stats.failed, stats.delivered) == (2, 2, 0)
    ours = [r for r in caplog.records if r.name == "appevents.segment" and r.levelno == logging.ERROR]
    assert len(ours) == 1  # logged once per cause, then counted
    assert "400" in ours[0].getMessage()


def test_a_thousand_lifecycle_events_then_shutdown_all_arrive_once(
    configure_segment: ConfigureSegment, segment_receiver: SegmentReceiver, exporter_of: ExporterOf
) -> None:
    pipeline = configure_segment()
    exporter = exporter_of(pipeline)
    events = [lifecycle_event(ApplicationEventNames.ACTIVITY_END, workflow_id=f"wf-{i}") for i in range(1000)]
    for event in events:
        EventStore.publish(event)
    EventStore.shutdown()

    received = Counter(message["messageId"] for message in segment_receiver.messages)
    assert set(received) == {event.event_id for event in events}
    assert max(received.values()) == 1
    assert all(request.status == 200 and not request.problems for request in segment_receiver.requests)
    stats = exporter.stats()
    assert (stats.accepted, stats.delivered, stats.pending, stats.failed, stats.dropped) == (1000, 1000, 0, 0, 0)


def test_a_full_library_queue_makes_the_exporter_wait_instead_of_dropping(
    configure_segment: ConfigureSegment,
    segment_receiver: SegmentReceiver,
    exporter_of: ExporterOf,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APPEVENTS_SEGMENT_MAX_QUEUE_SIZE", "2")
    monkeypatch.setenv("APPEVENTS_SEGMENT_BATCH_SIZE", "1")
    segment_receiver.hold()  # Segment stops answering: the consumer is stuck on its first request
    pipeline = configure_segment()
    exporter = exporter_of(pipeline)
    for _ in range(10):
        EventStore.publish(lifecycle_event(ApplicationEventNames.ACTIVITY_START))
    assert wait_until(lambda: exporter.stats().accepted >= 2)
    assert EventStore.flush_sync(0.3) is False
    segment_receiver.release()
    assert EventStore.flush_sync(10)
    assert len(segment_receiver.messages) == 10
    stats = EventStore.stats()["segment"]
    assert (stats.accepted, stats.delivered, stats.dropped, stats.failed) == (10, 10, 0, 0)
    assert exporter.stats().delivered == 10


def test_message_over_segments_size_limit_is_counted_invalid_and_the_rest_still_flow(
    configure_segment: ConfigureSegment,
    segment_receiver: SegmentReceiver,
    exporter_of: ExporterOf,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = configure_segment()
    too_big = lifecycle_event(ApplicationEventNames.ACTIVITY_END, data={"log_tail": "x" * 40_000})
    fine = lifecycle_event(ApplicationEventNames.ACTIVITY_END)
    EventStore.publish(too_big)
    EventStore.publish(fine)
    assert EventStore.flush_sync(10)

    assert [message["messageId"] for message in segment_receiver.messages] == [fine.event_id]
    stats = exporter_of(pipeline).stats()
    assert (stats.invalid, stats.accepted, stats.delivered) == (1, 1, 1)
    errors = [r for r in caplog.records if r.name == "appevents.segment" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and "xxxx" not in errors[0].getMessage()


def test_shutdown_is_bounded_when_segment_does_not_answer(
    configure_segment: ConfigureSegment,
    segment_receiver: SegmentReceiver,
    exporter_of: ExporterOf,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("APPEVENTS_SEGMENT_SHUTDOWN_TIMEOUT_MS", "200")
    monkeypatch.setenv("APPEVENTS_SEGMENT_TIMEOUT_MS", "500")
    segment_receiver.hold()
    pipeline = configure_segment()
    exporter = exporter_of(pipeline)
    EventStore.publish(lifecycle_event(ApplicationEventNames.WORKFLOW_START))

    EventStore.shutdown(timeout_s=0.5)  # returns although Segment never answers (the test timeout bounds it)

    assert exporter.stats().pending == 1
    assert exporter.stats().delivered == 0
    assert any("1 message(s) undelivered" in r.getMessage() for r in caplog.records if r.name == "appevents.segment")


def test_segment_receives_with_no_dapr_sidecar_configured(
    configure_segment: ConfigureSegment, segment_receiver: SegmentReceiver
) -> None:
    assert not any(name.startswith("DAPR_") for name in os.environ)
    pipeline = configure_segment("memory")
    assert sorted(pipeline.channels) == ["memory", "segment"]
    event = lifecycle_event(ApplicationEventNames.WORKFLOW_START)
    EventStore.publish(event)
    assert EventStore.flush_sync(10)
    assert [message["messageId"] for message in segment_receiver.messages] == [event.event_id]


def test_the_exporter_does_not_import_dapr() -> None:
    code = (
        "import sys, appevents_exporter_segment\n"
        "assert not [m for m in sys.modules if m == 'dapr' or m.startswith(('dapr.', 'appevents_exporter_dapr'))]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_process_exit_delivers_what_is_still_queued(
    segment_env: None, segment_receiver: SegmentReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPEVENTS_SEGMENT_SHUTDOWN_TIMEOUT_MS", "3000")  # bounds the script if delivery stalls
    # No flush, no shutdown in the script: the exit path (EventStore's atexit hook) must deliver. Configured twice,
    # so the live Segment client is created after EventStore registered its hook: the library's own exit hook
    # (stop the consumer, no flush) would run first and strand the queue, so the exporter must have removed it.
    script = textwrap.dedent(
        """
        from appevents import AppEventsSettings, Event, EventStore, configure
        configure(AppEventsSettings(exporters=["segment"]))
        configure(AppEventsSettings(exporters=["segment"]))
        for i in range(50):
            EventStore.publish(Event(event_type="workflow.lifecycle", event_name="workflow_start",
                                     data={"i": i}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(message["properties"]["i"] for message in segment_receiver.messages) == list(range(50))


def test_the_consumer_thread_leaves_the_process_signals_to_the_application(
    configure_segment: ConfigureSegment, exporter_of: ExporterOf
) -> None:
    exporter = exporter_of(configure_segment())
    consumers = [thread for thread in threading.enumerate() if isinstance(thread, ReportingConsumer)]
    assert consumers and all(consumer in exporter._client.consumers for consumer in consumers)
    assert all(leaves_process_signals_alone(consumer) for consumer in consumers)
