"""Per-event outcomes of the Segment exporter's encoded path, driven directly against a Segment-like receiver.

No pipeline here: each test builds a :class:`SegmentExporter`, hands it :class:`EncodedEvent` batches the way the
delivery engine does, and checks the :class:`ExportOutcome` against what the receiver saw.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from segment_events import business_event, lifecycle_event

from appevents import AppEventsSettings, ApplicationEventNames, Event
from appevents._records import encode_event, record_attributes
from appevents.exporting import EncodedEvent, ExportOutcome
from appevents_exporter_segment import SegmentExporter, SegmentExporterSettings
from support.segment_receiver import SegmentReceiver
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(30)

CONSUMER_THREAD = "appevents-segment-consumer"

MakeExporter = Callable[..., SegmentExporter]


encoded = encode_event  # the event as the engine hands it over


def activity_ends(count: int) -> list[EncodedEvent]:
    return [encoded(lifecycle_event(ApplicationEventNames.ACTIVITY_END, workflow_id=f"wf-{i}")) for i in range(count)]


def ids(events: list[EncodedEvent]) -> list[str]:
    return [event.event_id for event in events]


def is_empty(outcome: ExportOutcome) -> bool:
    return not (outcome.failed or outcome.dropped or outcome.retry)


def consumer_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == CONSUMER_THREAD and thread.is_alive()}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def make_exporter(
    segment_receiver: SegmentReceiver, write_key: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MakeExporter]:
    """``make_exporter(batch_size=2, …)``: an exporter pointed at the receiver, fast batching; shut down after."""
    monkeypatch.setenv("APPEVENTS_APPLICATION_NAME", "billing")
    monkeypatch.setenv("APPEVENTS_TENANT_ID", "acme")
    made: list[SegmentExporter] = []

    def _make(**values: object) -> SegmentExporter:
        settings = SegmentExporterSettings.model_validate(
            {
                "write_key": write_key,
                "host": segment_receiver.url,
                "upload_interval_ms": 20,
                "timeout_ms": 5_000,
                "max_total_backoff_ms": 5_000,
                "shutdown_timeout_ms": 1_000,
                **values,
            }
        )
        exporter = SegmentExporter(settings, app_settings=AppEventsSettings())
        made.append(exporter)
        return exporter

    yield _make
    for exporter in made:
        exporter.shutdown()


def test_lifecycle_events_all_delivered_leave_the_outcome_empty(
    make_exporter: MakeExporter, segment_receiver: SegmentReceiver
) -> None:
    exporter = make_exporter(batch_size=7)
    events = activity_ends(20)

    outcome = exporter.export_events(events)

    assert is_empty(outcome) and outcome.retry_reason == ""
    # Returned only once Segment answered every message: nothing left to wait for.
    assert sorted(message["messageId"] for message in segment_receiver.messages) == sorted(ids(events))
    assert all(request.status == 200 and not request.problems for request in segment_receiver.requests)
    stats = exporter.stats()
    assert (stats.accepted, stats.delivered, stats.failed, stats.undelivered, stats.pending) == (20, 20, 0, 0, 0)


def test_events_segment_refuses_with_400_are_failed_with_the_status_and_not_retried(
    make_exporter: MakeExporter, segment_receiver: SegmentReceiver
) -> None:
    exporter = make_exporter()
    events = activity_ends(5)
    segment_receiver.respond_with(*[400] * len(events))  # every request the batch needs

    outcome = exporter.export_events(events)

    assert outcome.failed == [(event, "refused:400") for event in events]
    assert outcome.retry == [] and outcome.dropped == []
    requests = segment_receiver.requests
    assert all(request.status == 400 for request in requests)
    assert sum(len(request.messages) for request in requests) == len(events)  # each sent once: no retry of a 400
    assert segment_receiver.messages == []
    stats = exporter.stats()
    assert (stats.accepted, stats.failed, stats.delivered, stats.undelivered, stats.pending) == (5, 5, 0, 0, 0)


def test_a_refused_request_fails_only_its_own_events(
    make_exporter: MakeExporter, segment_receiver: SegmentReceiver
) -> None:
    exporter = make_exporter(batch_size=2)
    events = activity_ends(5)
    segment_receiver.respond_with(400)  # the first request, then 200

    outcome = exporter.export_events(events)

    refused, *accepted = segment_receiver.requests
    refused_ids = {message["messageId"] for message in refused.messages}
    assert refused.status == 400 and refused_ids and all(request.status == 200 for request in accepted)
    assert outcome.failed == [(event, "refused:400") for event in events if event.event_id in refused_ids]
    assert outcome.retry == []
    delivered = sorted(message["messageId"] for message in segment_receiver.messages)
    assert delivered == sorted(set(ids(events)) - refused_ids)
    assert (exporter.stats().failed, exporter.stats().delivered) == (len(refused_ids), 5 - len(refused_ids))


def test_events_are_returned_for_retry_when_segment_answers_503_past_the_retry_budget(
    make_exporter: MakeExporter, segment_receiver: SegmentReceiver
) -> None:
    exporter = make_exporter(max_retries=1)
    events = activity_ends(3)
    segment_receiver.respond_with(*[503] * 2 * len(events))  # an attempt and one retry, for every request

    outcome = exporter.export_events(events)

    assert outcome.retry == events
    assert outcome.failed == [] and outcome.dropped == []
    assert outcome.retry_reason == "Segment answered 503"
    requests = segment_receiver.requests
    assert all(request.status == 503 for request in requests)
    assert sum(len(request.messages) for request in requests) == 2 * len(events)  # each sent, then retried once
    stats = exporter.stats()
    assert (stats.accepted, stats.undelivered, stats.failed, stats.delivered, stats.pending) == (3, 3, 0, 0, 0)


def test_events_are_returned_for_retry_when_segment_is_down(make_exporter: MakeExporter) -> None:
    exporter = make_exporter(host=f"http://127.0.0.1:{closed_port()}", max_retries=1)
    events = activity_ends(2)

    outcome = exporter.export_events(events)

    assert outcome.retry == events and outcome.failed == []
    assert outcome.retry_reason == "cannot reach Segment (ConnectionError)"
    assert exporter.stats().undelivered == 2


def test_non_lifecycle_events_are_not_accepted_and_a_mixed_batch_sends_only_lifecycle_ones(
    make_exporter: MakeExporter, segment_receiver: SegmentReceiver
) -> None:
    exporter = make_exporter(event_names={"workflow_end": ""})  # mapped to "": not sent
    business = encoded(business_event())
    worker_start = encoded(lifecycle_event(ApplicationEventNames.WORKER_START, state=None))  # lifecycle, unmapped
    workflow_end = encoded(lifecycle_event(ApplicationEventNames.WORKFLOW_END))
    workflow_start = encoded(lifecycle_event(ApplicationEventNames.WORKFLOW_START))
    activity_end = encoded(lifecycle_event(ApplicationEventNames.ACTIVITY_END))

    assert [exporter.accepts(e) for e in (business, worker_start, workflow_end, workflow_start, activity_end)] == [
        False,
        False,
        False,
        True,
        True,
    ]

    outcome = exporter.export_events([business, workflow_start, worker_start, workflow_end, activity_end])

    assert is_empty(outcome)  # the refused ones are neither sent nor listed
    assert sorted(m["messageId"] for m in segment_receiver.messages) == sorted(ids([workflow_start, activity_end]))
    stats = exporter.stats()
    assert (stats.skipped, stats.accepted, stats.delivered) == (3, 2, 2)


def test_a_message_over_segments_32_kb_limit_is_failed_invalid_and_the_others_delivered(
    make_exporter: MakeExporter, segment_receiver: SegmentReceiver
) -> None:
    exporter = make_exporter()
    too_big = encoded(lifecycle_event(ApplicationEventNames.ACTIVITY_END, data={"log_tail": "x" * 40_000}))
    fine = activity_ends(2)

    outcome = exporter.export_events([fine[0], too_big, fine[1]])

    assert outcome.failed == [(too_big, "invalid:too_large")]
    assert outcome.retry == []
    assert sorted(m["messageId"] for m in segment_receiver.messages) == sorted(ids(fine))
    stats = exporter.stats()
    assert (stats.invalid, stats.accepted, stats.delivered) == (1, 2, 2)


def test_no_answer_within_the_export_bound_returns_the_events_for_retry_and_takes_queued_ones_back(
    make_exporter: MakeExporter, segment_receiver: SegmentReceiver
) -> None:
    exporter = make_exporter(batch_size=1, export_timeout_ms=300)
    segment_receiver.hold()  # the first request hangs; the other two messages wait in the library's queue
    events = activity_ends(3)

    started = time.monotonic()
    outcome = exporter.export_events(events)

    assert 0.3 <= time.monotonic() - started < 2.0
    assert outcome.retry == events
    assert outcome.retry_reason == "no answer from Segment within 0.3 s"
    stats = exporter.stats()
    assert (stats.accepted, stats.undelivered, stats.pending) == (3, 2, 1)  # two taken back, one in flight

    segment_receiver.release()
    assert wait_until(lambda: exporter.stats().pending == 0)
    # Only the one in flight went out (Segment dedupes it by messageId if the engine offers it again).
    assert [m["messageId"] for m in segment_receiver.messages] == [events[0].event_id]
    stats = exporter.stats()
    assert (stats.accepted, stats.delivered, stats.undelivered, stats.pending) == (3, 1, 2, 0)


def test_shutdown_during_a_slow_receiver_returns_the_unanswered_for_retry_promptly_and_stops_the_consumer(
    make_exporter: MakeExporter, segment_receiver: SegmentReceiver
) -> None:
    before = consumer_threads()
    exporter = make_exporter(batch_size=2, timeout_ms=1_000, shutdown_timeout_ms=5_000)
    segment_receiver.hold()
    events = activity_ends(5)
    outcomes: list[ExportOutcome] = []
    returned_at: list[float] = []

    def export() -> None:
        outcomes.append(exporter.export_events(events))
        returned_at.append(time.monotonic())

    exporting = threading.Thread(target=export)
    exporting.start()
    assert wait_until(lambda: exporter.stats().accepted == 5)
    time.sleep(0.2)  # the consumer has taken its first batch of two and is waiting for the receiver

    shutdown_started = time.monotonic()
    exporter.shutdown()
    shutdown_took = time.monotonic() - shutdown_started
    exporting.join(5)

    assert not exporting.is_alive()
    assert returned_at[0] - shutdown_started < 0.5
    [outcome] = outcomes
    assert outcome.retry == events and outcome.failed == []
    assert "shut down" in outcome.retry_reason
    # Bounded by the request in flight (timeout_ms), not by shutdown_timeout_ms: nothing else was queued.
    assert shutdown_took < 3.0
    assert consumer_threads() - before == set()
    stats = exporter.stats()
    assert (stats.accepted, stats.undelivered, stats.delivered) == (5, 3, 0)  # 3 taken back, 2 were in flight
    assert stats.pending == 2

    later = exporter.export_events(activity_ends(1))
    assert later.retry and "shut down" in later.retry_reason


def test_the_otel_export_adapter_sends_lifecycle_records_and_skips_the_rest(
    make_exporter: MakeExporter, segment_receiver: SegmentReceiver
) -> None:
    exporter = make_exporter()

    def record(event: Event | None) -> ReadableLogRecord:
        if event is None:
            log_record = LogRecord(timestamp=time.time_ns(), body="an application log line")
        else:
            log_record = LogRecord(
                timestamp=time.time_ns(),
                body=event.model_dump_json(),
                attributes=record_attributes(event),
                event_name=event.event_type,
            )
        return ReadableLogRecord(log_record, resource=Resource.get_empty())

    start = lifecycle_event(ApplicationEventNames.WORKFLOW_START)
    assert exporter.export([record(None), record(business_event()), record(start)]) is LogRecordExportResult.SUCCESS
    assert [m["messageId"] for m in segment_receiver.messages] == [start.event_id]

    segment_receiver.respond_with(400)
    end = lifecycle_event(ApplicationEventNames.WORKFLOW_END)
    assert exporter.export([record(end)]) is LogRecordExportResult.FAILURE
    stats = exporter.stats()
    assert (stats.skipped, stats.delivered, stats.failed) == (2, 1, 1)


def test_write_key_stays_out_of_logs_reprs_and_reasons(
    make_exporter: MakeExporter,
    segment_receiver: SegmentReceiver,
    write_key: str,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    exporter = make_exporter(max_retries=0)
    segment_receiver.respond_with(503, 400)
    outcomes = [exporter.export_events(activity_ends(1)) for _ in range(3)]  # retry, refused, delivered
    down = make_exporter(host=f"http://127.0.0.1:{closed_port()}", max_retries=0)
    outcomes.append(down.export_events(activity_ends(1)))
    exporter.shutdown()
    down.shutdown()

    retried_or_failed = [(bool(o.retry), bool(o.failed)) for o in outcomes]
    assert retried_or_failed == [(True, False), (False, True), (False, False), (True, False)]
    assert [r.status for r in segment_receiver.requests] == [503, 400, 200]
    texts = [
        debug_logs.text,
        *(record.getMessage() for record in debug_logs.records),
        repr(exporter),
        str(exporter),
        repr(down),
        repr(exporter.stats()),
        *(repr(outcome) for outcome in outcomes),
        *(outcome.retry_reason for outcome in outcomes),
        *(reason for outcome in outcomes for _, reason in outcome.failed),
    ]
    assert any("making request" in text for text in texts)  # the library did log the body it sent
    for form in (write_key, base64.b64encode(f"{write_key}:".encode()).decode()):
        assert not [text for text in texts if form in text]
