"""``DaprExporter.export_events``, driven directly against the sidecar stand-in on loopback: what it answers per
event (delivered, ``failed`` with a reason, ``dropped``, ``retry``), and how ``shutdown()`` ends it."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource

from appevents import Event
from appevents._models import STORED_EVENT_CONTEXT
from appevents._records import encode_event, record_attributes
from appevents.exporting import EncodedEvent, ExportOutcome
from appevents_exporter_dapr import DaprExporter, DaprExporterSettings
from support.dapr_sidecar import DaprSidecar

pytestmark = pytest.mark.timeout(30)

MakeExporter = Callable[..., DaprExporter]

THREAD_PREFIX = "appevents-dapr"


encoded = encode_event  # the event as the engine hands it over


def numbered(count: int, **data: Any) -> list[EncodedEvent]:
    return [encoded(Event(event_type="order.received", data={"n": n, **data})) for n in range(count)]


def oversized(size: int) -> EncodedEvent:
    """An event bigger than the sidecar takes (built as if read back from a store: the size cap is not re-applied)."""
    event = Event.model_validate(
        {"event_type": "report.generated", "data": {"blob": "x" * size}}, context={STORED_EVENT_CONTEXT: True}
    )
    return encoded(event)


def ids_sent(sidecar: DaprSidecar) -> list[str]:
    """Event ids the sidecar took, whatever the mode (one event, a JSON array, or bulk publish entries)."""
    ids: list[str] = []
    for body in [*sidecar.binding_bodies(), *(p.data for p in sidecar.published)]:
        document = json.loads(body)
        ids += [e["event_id"] for e in document] if isinstance(document, list) else [document["event_id"]]
    return ids


def ids(events: list[EncodedEvent]) -> list[str]:
    return sorted(e.event_id for e in events)


def assert_stats_match(exporter: DaprExporter, batch_sizes: int, outcomes: list[ExportOutcome]) -> None:
    stats = exporter.stats()
    failed = sum(len(o.failed) for o in outcomes)
    dropped = sum(len(o.dropped) for o in outcomes)
    retry = sum(len(o.retry) for o in outcomes)
    assert (stats.failed, stats.skipped_no_component, stats.returned) == (failed, dropped, retry)
    assert stats.delivered == batch_sizes - failed - dropped - retry


def dapr_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.is_alive()}


@pytest.fixture
def make_exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeExporter]:
    """``make_exporter(sidecar, **settings)``: an exporter pointed at ``sidecar``, no auth, fast retries; shut
    down at teardown."""
    made: list[DaprExporter] = []

    def make(sidecar: DaprSidecar, **settings: Any) -> DaprExporter:
        for name, value in sidecar.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("DAPR_API_TOKEN", raising=False)
        defaults: dict[str, Any] = {
            "retry_initial_backoff_s": 0.05,
            "retry_max_backoff_s": 0.2,
            "retry_max_elapsed_s": 10,
            "probe_initial_backoff_s": 5,
            "health_probe_timeout_s": 0.5,
        }
        exporter = DaprExporter(DaprExporterSettings(**{**defaults, **settings}), header_provider=None)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A URL whose server accepts connections and never answers: calls through it stay in flight."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/events"
    listener.close()  # the stand-in's pending forwards fail now rather than at their own timeout


def export_on_thread(exporter: DaprExporter, batch: list[EncodedEvent]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        started = time.monotonic()
        outcome = exporter.export_events(batch)
        result.extend([outcome, time.monotonic(), started])

    thread = threading.Thread(target=run, name="test-export")
    thread.start()
    return thread, result


# -- per-event outcomes -----------------------------------------------------------------------------------------
def test_binding_mode_reports_the_one_refused_event_with_its_reason_and_delivers_the_others(
    sidecar: DaprSidecar, make_exporter: MakeExporter, caplog: pytest.LogCaptureFixture
) -> None:
    sidecar.register("eventstore", "bindings.noop")
    sidecar.fail_when("poison-pill-7", grpc.StatusCode.INVALID_ARGUMENT)
    exporter = make_exporter(sidecar)
    events = numbered(20)
    poisoned = encoded(Event(event_type="order.received", data={"tag": "poison-pill-7"}))
    batch = [*events[:10], poisoned, *events[10:]]
    caplog.set_level(logging.ERROR)

    outcome = exporter.export_events(batch)

    assert outcome.failed == [(poisoned, "refused:INVALID_ARGUMENT")]
    assert (outcome.dropped, outcome.retry, outcome.retry_reason) == ([], [], "")
    # The bodies go on the wire exactly as the engine encoded them.
    assert sorted(sidecar.binding_bodies()) == sorted(e.body for e in events)
    assert exporter.stats().retried == 0
    assert_stats_match(exporter, len(batch), [outcome])
    [logged] = [r.getMessage() for r in caplog.records if "INVALID_ARGUMENT" in r.getMessage()]
    assert "poison-pill-7" in logged  # the details stay in the log, not in the reason


@pytest.mark.parametrize("mode", ["binding", "batch", "pubsub"])
def test_a_too_large_event_fails_alone_at_once_and_its_neighbours_are_delivered(
    make_exporter: MakeExporter, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    sidecar = DaprSidecar(max_message_bytes=64 * 1024).start()  # like daprd's 4 MiB gRPC limit, smaller
    try:
        sidecar.register("eventstore", "bindings.noop")
        sidecar.register("pubsub", "pubsub.redis")
        # Arrays up to 1 MiB: the big event shares its array with neighbours, which halving must rescue.
        exporter = make_exporter(sidecar, mode=mode, batch_max_bytes=1024 * 1024)
        before, after = numbered(10), numbered(10)
        big = oversized(100 * 1024)
        caplog.set_level(logging.ERROR)
        started = time.monotonic()

        outcome = exporter.export_events([*before, big, *after])

        elapsed = time.monotonic() - started
        assert outcome.failed == [(big, "too_large")]
        assert (outcome.dropped, outcome.retry) == ([], [])
        assert sorted(ids_sent(sidecar)) == ids([*before, *after])
        assert elapsed < 3  # refused for good, not retried for the retry window
        assert exporter.stats().retried == 0
        assert_stats_match(exporter, 21, [outcome])

        second = exporter.export_events([oversized(80 * 1024)])
        assert [reason for _, reason in second.failed] == ["too_large"]
        assert len([r for r in caplog.records if "too_large" in r.getMessage()]) == 1  # once per cause
    finally:
        sidecar.stop()


def test_throttling_resource_exhausted_is_still_retried_until_delivered(
    sidecar: DaprSidecar, make_exporter: MakeExporter
) -> None:
    sidecar.register("eventstore", "bindings.noop")
    sidecar.fail_next(5, grpc.StatusCode.RESOURCE_EXHAUSTED)
    exporter = make_exporter(sidecar)
    events = numbered(10)

    outcome = exporter.export_events(events)

    assert (outcome.failed, outcome.dropped, outcome.retry) == ([], [], [])
    assert sorted(ids_sent(sidecar)) == ids(events)
    assert exporter.stats().retried >= 5


def test_a_missing_component_drops_every_event_as_no_component_warns_once_and_is_asked_again_later(
    sidecar: DaprSidecar, make_exporter: MakeExporter, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = make_exporter(sidecar, probe_initial_backoff_s=0.3)
    first, second = numbered(5), numbered(3)
    caplog.set_level(logging.WARNING)

    outcomes = [exporter.export_events(first), exporter.export_events(second)]

    assert [o.dropped for o in outcomes] == [
        [(e, "no_component") for e in first],
        [(e, "no_component") for e in second],
    ]
    assert all((o.failed, o.retry) == ([], []) for o in outcomes)
    assert sidecar.metadata_calls == 1  # the second batch did not ask again: the probe backs off
    assert len([r for r in caplog.records if "no binding component named 'eventstore'" in r.getMessage()]) == 1
    assert_stats_match(exporter, 8, outcomes)

    sidecar.register("eventstore", "bindings.noop")  # the component appears: delivered after the probe backoff
    time.sleep(0.35)
    third = numbered(4)
    outcome = exporter.export_events(third)
    assert (outcome.failed, outcome.dropped, outcome.retry) == ([], [], [])
    assert sorted(ids_sent(sidecar)) == ids(third)


@pytest.mark.parametrize("sidecar_was_up", [True, False], ids=["sidecar-went-down", "sidecar-never-up"])
def test_a_sidecar_that_is_down_gets_every_event_back_as_retry_within_the_retry_window(
    sidecar: DaprSidecar, make_exporter: MakeExporter, caplog: pytest.LogCaptureFixture, sidecar_was_up: bool
) -> None:
    sidecar.register("eventstore", "bindings.noop")
    exporter = make_exporter(sidecar, retry_max_elapsed_s=1)
    if sidecar_was_up:
        assert exporter.export_events(numbered(1)).retry == []  # client and channel made while it answered
    sidecar.stop()
    events = numbered(6)
    caplog.set_level(logging.ERROR)
    started = time.monotonic()

    outcome = exporter.export_events(events)

    elapsed = time.monotonic() - started
    assert outcome.retry == events
    assert (outcome.failed, outcome.dropped) == ([], [])
    assert 0.9 <= elapsed < 2.5
    assert outcome.retry_reason.startswith("UNAVAILABLE: " if sidecar_was_up else "SidecarNotReady: ")
    assert "\n" not in outcome.retry_reason
    assert exporter.stats().returned == 6

    assert "the retry window (APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S=1)" in outcome.retry_reason
    assert len(exporter.export_events(numbered(2)).retry) == 2
    assert not caplog.records, "the engine logs what it does with returned events, once; the exporter does not"


def test_an_outage_costs_one_call_per_attempt_and_the_rest_go_once_the_sidecar_answers_again(
    sidecar: DaprSidecar, make_exporter: MakeExporter
) -> None:
    sidecar.register("eventstore", "bindings.noop")
    exporter = make_exporter(sidecar, retry_max_elapsed_s=20)
    warm_up = numbered(1)
    assert exporter.export_events(warm_up).retry == []  # client and channel made while it answered
    sidecar.stop()
    events = numbered(200)
    thread, result = export_on_thread(exporter, events)
    time.sleep(1.0)  # attempts every 0.05-0.2 s meanwhile: each after the first sends a single event
    calls_while_down = exporter.stats().calls - 1
    attempts_while_down = exporter.stats().retried // 200  # each retry counts every pending event
    sidecar.start()
    thread.join(20)

    outcome = result[0]
    assert (outcome.failed, outcome.dropped, outcome.retry) == ([], [], [])
    assert sorted(ids_sent(sidecar)) == ids(warm_up + events)  # each once
    assert 200 <= calls_while_down <= 200 + attempts_while_down + 1, (calls_while_down, attempts_while_down)
    assert attempts_while_down >= 3


# -- shutdown ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("situation", ["retrying", "calls-in-flight"])
def test_shutdown_from_another_thread_ends_a_running_export_promptly_with_its_events_as_retry(
    sidecar: DaprSidecar,
    make_exporter: MakeExporter,
    blackhole: str,
    caplog: pytest.LogCaptureFixture,
    situation: str,
) -> None:
    threads_before = dapr_threads()
    if situation == "retrying":
        sidecar.register("eventstore", "bindings.noop")
        sidecar.fail_next(1_000_000, grpc.StatusCode.UNAVAILABLE)
    else:  # the endpoint behind the binding never answers: calls sit in flight until their 10 s deadline
        sidecar.register("eventstore", "bindings.http", blackhole)
    exporter = make_exporter(sidecar, retry_max_elapsed_s=30, call_timeout_s=10, max_in_flight=4)
    events = numbered(12)
    caplog.set_level(logging.DEBUG, logger="appevents")
    thread, result = export_on_thread(exporter, events)
    time.sleep(0.5)
    assert thread.is_alive()
    assert dapr_threads() - threads_before  # the exporter's calls run on its own threads

    asked = time.monotonic()
    exporter.shutdown()
    shutdown_took = time.monotonic() - asked
    thread.join(timeout=3)

    assert not thread.is_alive(), "export_events did not return within 3 s of shutdown()"
    outcome, returned_at, _ = result
    assert returned_at - asked < 3
    assert shutdown_took < 3
    assert ids(outcome.retry) == ids(events)
    assert (outcome.failed, outcome.dropped) == ([], [])
    if situation == "retrying":
        assert exporter.stats().retried > 0
    else:  # still waiting for the first calls: they were cancelled, not timed out
        assert exporter.stats().retried == 0
    assert outcome.retry_reason.startswith("exporter shut down")
    assert dapr_threads() - threads_before == set()  # shutdown() returned after the last of its threads ended
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no "bug", no give-up
    assert "cannot schedule new futures" not in caplog.text
    assert_stats_match(exporter, len(events), [outcome])

    exporter.shutdown()  # twice: harmless
    late = numbered(3)
    assert exporter.export_events(late).retry == late  # after shutdown nothing is sent, nothing is started
    assert dapr_threads() - threads_before == set()


# -- the OpenTelemetry adapter ----------------------------------------------------------------------------------
def test_export_of_log_records_goes_through_the_encoded_path_and_succeeds_only_if_all_were_delivered(
    sidecar: DaprSidecar, make_exporter: MakeExporter
) -> None:
    sidecar.register("eventstore", "bindings.noop")
    sidecar.fail_when("poison-pill-9", grpc.StatusCode.INVALID_ARGUMENT)
    exporter = make_exporter(sidecar)
    resource = Resource.create({})

    def record(event: Event) -> ReadableLogRecord:
        log_record = LogRecord(
            body=event.model_dump_json(), attributes=record_attributes(event), event_name=event.event_type
        )
        return ReadableLogRecord(log_record, resource)

    good = [Event(event_type="order.received", data={"n": n}) for n in range(3)]
    other = ReadableLogRecord(LogRecord(body="an application log line", attributes={"x": 1}), resource)

    assert exporter.export([record(e) for e in good[:2]] + [other, record(good[2])]) is LogRecordExportResult.SUCCESS
    assert sorted(ids_sent(sidecar)) == sorted(e.event_id for e in good)
    assert sidecar.binding_bodies()[0] in {e.model_dump_json().encode() for e in good}

    poisoned = Event(event_type="order.received", data={"tag": "poison-pill-9"})
    assert exporter.export([record(poisoned)]) is LogRecordExportResult.FAILURE
    stats = exporter.stats()
    assert (stats.delivered, stats.failed, stats.ignored_records) == (3, 1, 1)
