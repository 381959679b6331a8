"""The delivery engine in memory mode: per-event outcomes, exact counts, waiting publishers, threads that end.

Every test checks ``accepted = delivered + failed + dropped + pending`` per exporter, and that ``accepted`` is what
was published.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import appevents._pipeline
import appevents._spool_writer
from appevents import AppEventsSettings, DeliveryStats, Event, EventStore, configure
from appevents._memory import InMemoryEventExporter
from appevents._records import event_from_json
from appevents.exporting import EncodedEvent, ExportOutcome, encode_event
from support.waiting import wait_until


def _settings(**overrides: object) -> AppEventsSettings:
    return AppEventsSettings(**{"exporters": [], "schedule_delay_ms": 20, **overrides})  # type: ignore[arg-type]


def assert_identity(stats: DeliveryStats, published: int | None = None) -> None:
    assert stats.accepted == stats.delivered + stats.failed + stats.dropped + stats.pending, stats
    assert sum(stats.failed_reasons.values()) == stats.failed, stats
    assert sum(stats.dropped_reasons.values()) == stats.dropped, stats
    if published is not None:
        assert stats.accepted == published, stats


class Scripted:
    """An encoded-path exporter whose answer per event is decided by the event's ``data["fate"]``."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.calls = 0
        self.release = threading.Event()
        self.release.set()
        self.shut = False

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        self.calls += 1
        self.release.wait(30)
        outcome = ExportOutcome()
        fates = [event_from_json(event.body).data.get("fate", "ok") for event in batch]
        if "raise" in fates:
            raise RuntimeError("exporter bug")
        for event, fate in zip(batch, fates, strict=True):
            if fate == "refuse":
                outcome.failed.append((event, "refused:TEST"))
            elif fate == "skip":
                outcome.dropped.append((event, "no_component"))
            elif fate == "later":
                outcome.retry.append(event)
                outcome.retry_reason = "UNAVAILABLE: down"
            else:
                self.delivered.append(event.event_id)
        return outcome

    def shutdown(self) -> None:
        self.shut = True
        self.release.set()


def test_one_refused_event_fails_alone_and_its_neighbours_are_delivered() -> None:
    scripted = Scripted()
    configure(_settings(max_export_batch_size=512), exporters={"scripted": scripted})
    events = [Event(event_type="a.b", data={"n": n}) for n in range(100)]
    bad = Event(event_type="a.b", data={"fate": "refuse"})
    events += [bad] + [Event(event_type="a.b", data={"n": n}) for n in range(100)]
    for event in events:
        EventStore.publish(event)
    assert EventStore.flush_sync(5)
    stats = EventStore.stats()["scripted"]
    assert_identity(stats, published=201)
    assert (stats.delivered, stats.failed, stats.failed_reasons) == (200, 1, {"refused:TEST": 1})
    assert bad.event_id not in scripted.delivered and len(set(scripted.delivered)) == 200


def test_an_exporter_that_raises_costs_its_batch_only_and_keeps_its_thread(caplog: pytest.LogCaptureFixture) -> None:
    scripted = Scripted()
    configure(_settings(max_export_batch_size=10), exporters={"scripted": scripted})
    EventStore.publish(Event(event_type="a.b", data={"fate": "raise"}))
    assert EventStore.flush_sync(5)
    for n in range(25):
        EventStore.publish(Event(event_type="a.b", data={"n": n}))
    assert EventStore.flush_sync(5)
    stats = EventStore.stats()["scripted"]
    assert_identity(stats, published=26)
    assert (stats.delivered, stats.failed, stats.failed_reasons) == (25, 1, {"exporter_error:RuntimeError": 1})
    assert len([r for r in caplog.records if "failed (RuntimeError" in r.getMessage()]) == 1


def test_without_a_spool_what_the_destination_cannot_take_now_is_counted_failed_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scripted = Scripted()
    configure(_settings(), exporters={"scripted": scripted})
    for fate in ["later"] * 30 + ["ok"] * 5 + ["skip"] * 2:
        EventStore.publish(Event(event_type="a.b", data={"fate": fate}))
    assert EventStore.flush_sync(5)
    stats = EventStore.stats()["scripted"]
    assert_identity(stats, published=37)
    assert (stats.delivered, stats.failed, stats.dropped) == (5, 30, 2)
    assert stats.failed_reasons == {"unavailable": 30} and stats.dropped_reasons == {"no_component": 2}
    messages = [r.getMessage() for r in caplog.records if "could not deliver" in r.getMessage()]
    assert len(messages) == 1 and "UNAVAILABLE: down" in messages[0] and "APPEVENTS_SPOOL_PATH" in messages[0]


def test_publish_wait_returns_once_every_exporter_settled_the_event() -> None:
    scripted, memory = Scripted(), InMemoryEventExporter()
    configure(_settings(schedule_delay_ms=5000), exporters={"scripted": scripted, "memory": memory})
    event = Event(event_type="a.b")
    assert EventStore.publish(event, wait=True, timeout_s=5) is True  # woken at once, not at the 5 s timer
    assert event.event_id in scripted.delivered and [e.event_id for e in memory.events] == [event.event_id]
    assert EventStore.publish(Event(event_type="a.b", data={"fate": "refuse"}), wait=True, timeout_s=5) is False


def test_publish_wait_times_out_while_the_exporter_hangs() -> None:
    scripted = Scripted()
    scripted.release.clear()
    configure(_settings(), exporters={"scripted": scripted})
    assert EventStore.publish(Event(event_type="a.b"), wait=True, timeout_s=0.2) is False
    scripted.release.set()
    assert EventStore.flush_sync(5)
    assert_identity(EventStore.stats()["scripted"], published=1)


async def test_publish_event_wait_does_not_block_the_event_loop() -> None:
    scripted = Scripted()
    scripted.release.clear()
    configure(_settings(), exporters={"scripted": scripted})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    publishing = asyncio.create_task(EventStore.publish_event(Event(event_type="a.b"), wait=True, timeout_s=10))
    await asyncio.sleep(0.3)
    assert not publishing.done() and ticks >= 5, "the loop kept running while the publisher waited"
    scripted.release.set()
    assert await publishing is True
    ticking.cancel()


def test_events_changed_in_place_into_non_json_are_refused_alone(caplog: pytest.LogCaptureFixture) -> None:
    memory = InMemoryEventExporter()
    configure(_settings(), exporters={"memory": memory})
    bad = Event(event_type="a.b", data={"payload": []})
    bad.data["payload"].append(object())  # type: ignore[union-attr]
    assert EventStore.publish(Event(event_type="a.b", data={"n": 1})) is True
    assert EventStore.publish(bad) is False
    assert EventStore.publish(Event(event_type="a.b", data={"n": 2})) is True
    assert EventStore.flush_sync(5)
    assert [e.data["n"] for e in memory.events] == [1, 2]
    assert EventStore.unpublished_count() == 1
    assert_identity(EventStore.stats()["memory"], published=2)


def test_events_grown_in_place_past_the_cap_are_refused_at_publish(caplog: pytest.LogCaptureFixture) -> None:
    memory = InMemoryEventExporter()
    configure(_settings(max_event_bytes=10_000), exporters={"memory": memory})
    grown = Event(event_type="a.b", data={"blob": ""})
    grown.data["blob"] = "x" * 50_000
    assert EventStore.publish(grown) is False
    assert EventStore.publish(Event(event_type="a.b")) is True
    assert EventStore.flush_sync(5)
    assert len(memory.events) == 1 and EventStore.unpublished_count() == 1
    assert any("10000" in r.getMessage() and "refused at publish" in r.getMessage() for r in caplog.records)


def test_shutdown_stops_every_thread_it_started_and_reports_exactly(caplog: pytest.LogCaptureFixture) -> None:
    scripted = Scripted()
    scripted.release.clear()  # hangs until shut down
    configure(_settings(max_export_batch_size=10), exporters={"scripted": scripted, "memory": InMemoryEventExporter()})
    for n in range(50):
        EventStore.publish(Event(event_type="a.b", data={"n": n}))
    pipeline = EventStore.pipeline()
    assert pipeline is not None
    assert EventStore.shutdown(timeout_s=0.5) is False
    assert not [t.name for t in threading.enumerate() if t.name.startswith("appevents")]
    stats = pipeline.stats()
    assert_identity(stats["scripted"], published=50)
    assert_identity(stats["memory"], published=50)
    assert stats["memory"].delivered == 50
    scripted_stats = stats["scripted"]
    # The batch in the exporter when it was shut down was delivered; the 40 still queued are lost, and said so.
    assert (scripted_stats.delivered, scripted_stats.dropped, scripted_stats.pending) == (10, 40, 0)
    [report] = [r.getMessage() for r in caplog.records if "did not deliver everything" in r.getMessage()]
    assert "scripted: 10 of 50 delivered, 40 dropped {'shutdown': 40}" in report
    assert "memory" not in report


def test_the_first_publish_builds_the_exporters_off_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "memory")
    gate, entered = threading.Event(), threading.Event()
    built_on: list[str] = []
    real_load = appevents._pipeline.load_exporter

    def slow_load(name: str, settings: AppEventsSettings) -> object | None:
        built_on.append(threading.current_thread().name)
        entered.set()
        gate.wait(10)  # an exporter whose construction takes its time (a sidecar probe, a token request)
        return real_load(name, settings)

    monkeypatch.setattr(appevents._pipeline, "load_exporter", slow_load)
    events = [Event(event_type="a.b", data={"n": n}) for n in range(20)]
    for event in events:
        assert EventStore.publish(event) is True  # returns while the exporter is still being built
    assert entered.wait(5) and not gate.is_set()
    assert built_on == ["appevents-build"]
    gate.set()
    assert EventStore.flush_sync(5)
    pipeline = EventStore.pipeline()
    assert pipeline is not None
    memory = pipeline.exporter("memory")
    assert isinstance(memory, InMemoryEventExporter)
    assert [e.event_id for e in memory.events] == [e.event_id for e in events], "queued meanwhile, in order"


FATES = st.sampled_from(["ok", "ok", "ok", "refuse", "skip", "later", "raise"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fates=st.lists(FATES, max_size=60), batch=st.integers(1, 16), queue=st.integers(1, 80))
def test_accounting_holds_whatever_the_exporter_does(fates: list[str], batch: int, queue: int) -> None:
    scripted, memory = Scripted(), InMemoryEventExporter()
    configure(
        _settings(max_export_batch_size=batch, max_queue_size=queue),
        exporters={"scripted": scripted, "memory": memory},
    )
    try:
        for fate in fates:
            EventStore.publish(Event(event_type="a.b", data={"fate": fate}))
        assert EventStore.flush_sync(10)
        stats = EventStore.stats()
        for name in ("scripted", "memory"):
            assert_identity(stats[name], published=len(fates))
            assert stats[name].pending == 0
        assert stats["scripted"].delivered == len(scripted.delivered)
        assert stats["memory"].delivered == len(memory.events)
        assert stats["memory"].delivered + stats["memory"].dropped == len(fates)
    finally:
        EventStore.shutdown(5)


class _PausingQueue(deque[EncodedEvent]):
    """A channel queue whose ``append`` of a marked event waits until shutdown has begun: the publisher that passed
    the closed-check just before the intake closed, and appends only after."""

    def __init__(self, pipeline: appevents._pipeline.Pipeline) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.paused = threading.Event()

    def append(self, event: EncodedEvent) -> None:
        if b'"pause"' in event.body:
            self.paused.set()
            wait_until(lambda: self.pipeline._shutting_down, timeout_s=10)
            time.sleep(0.2)  # shutdown is past closing the intake by now
        super().append(event)


@pytest.mark.parametrize("durable", [False, True])
def test_a_publisher_caught_between_the_closed_check_and_its_append_is_drained_and_reported(
    durable: bool, tmp_path: Path
) -> None:
    exporter = InMemoryEventExporter()
    spool = {"spool_path": tmp_path / "spool.db"} if durable else {}
    pipeline = appevents._pipeline.build_pipeline(_settings(**spool), {"memory": exporter})
    stage = pipeline.writer if pipeline.writer is not None else pipeline.channels["memory"]
    queue = _PausingQueue(pipeline)
    if isinstance(stage, appevents._spool_writer.SpoolWriter):
        stage._inbox = queue
    else:
        stage._queue = queue
    events = [Event(event_type="a.b", data={"n": n}) for n in range(20)] + [
        Event(event_type="a.b", data={"step": "pause"})
    ]
    publisher = threading.Thread(target=lambda: [pipeline.submit(encode_event(e)) for e in events])
    publisher.start()
    assert queue.paused.wait(10)
    assert pipeline.shutdown(10)  # True: nothing was lost
    publisher.join(10)
    assert [e.event_id for e in exporter.events] == [e.event_id for e in events]
    for stats in pipeline.stats().values():
        assert_identity(stats, published=21)
        assert stats.delivered == 21
