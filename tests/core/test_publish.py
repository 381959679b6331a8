"""publish_event: never raises, never waits, one log record carrying the whole event, failures counted once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import TracerProvider

from appevents import ConfigurationError, Event, EventStore, configure
from appevents._counting import EpisodeWarning
from appevents._records import EVENT_ID_ATTRIBUTE, EVENT_NAME_ATTRIBUTE, event_from_record
from appevents._settings import AppEventsSettings
from appevents.testing import InMemoryEventExporter
from support.waiting import wait_until


class RecordKeeper(LogRecordProcessor):
    def __init__(self) -> None:
        self.records: list[ReadWriteLogRecord] = []

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self.records.append(log_record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class RaisingExporter(LogRecordExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.calls += 1
        raise RuntimeError("destination exploded")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class HangingExporter(LogRecordExporter):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.exported = 0

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.entered.set()
        self.release.wait(30)
        self.exported += len(batch)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self.release.set()


def _settings(**overrides: object) -> AppEventsSettings:
    return AppEventsSettings(exporters=[], **overrides)  # type: ignore[arg-type]


def _appevents_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("appevents") and r.levelno >= logging.WARNING]


async def test_without_destinations_publish_warns_once_and_returns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "none")
    for i in range(50):
        assert await EventStore.publish_event(Event(event_type="order.received", data={"i": i})) is False
    assert len(_appevents_warnings(caplog)) == 1
    assert "APPEVENTS_EXPORTERS" in caplog.records[0].getMessage()
    assert EventStore.unpublished_count() == 50


async def test_unknown_exporter_in_env_warns_once_and_the_others_work(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "carrier_pigeon,local")
    for _ in range(10):
        await EventStore.publish_event(Event(event_type="a.b"))
    assert await EventStore.flush(5)
    warnings = _appevents_warnings(caplog)
    assert len(warnings) == 1
    assert "carrier_pigeon" in warnings[0].getMessage() and "installed: " in warnings[0].getMessage()
    assert "local" in warnings[0].getMessage().split("installed: ")[1]
    assert EventStore.stats()["local"].delivered == 10
    assert "carrier_pigeon" not in EventStore.stats()
    with pytest.raises(ConfigurationError, match="carrier_pigeon"):
        configure()


async def test_first_publish_configures_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "memory")
    monkeypatch.setenv("APPEVENTS_APPLICATION_NAME", "billing")
    event = Event(event_type="invoice.sent")
    await EventStore.publish_event(event)
    assert await EventStore.flush(5)
    pipeline = EventStore.pipeline()
    assert pipeline is not None
    exporter = pipeline.exporter("memory")
    assert isinstance(exporter, InMemoryEventExporter)
    assert [e.event_id for e in exporter.events] == [event.event_id]
    assert exporter.events[0].metadata.application_name == "billing"


async def test_exporter_that_raises_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    raising = RaisingExporter()
    configure(_settings(max_export_batch_size=10), exporters={"boom": raising, "memory": InMemoryEventExporter()})
    for _ in range(35):
        await EventStore.publish_event(Event(event_type="a.b"))
    await EventStore.flush(5)
    stats = EventStore.stats()
    assert stats["boom"].failed == 35 and stats["boom"].delivered == 0
    assert stats["memory"].delivered == 35, "a failing exporter must not cost the others their events"
    assert raising.calls >= 4
    errors = [r for r in caplog.records if "failed (RuntimeError" in r.getMessage()]
    assert len(errors) == 1


def test_exporter_that_hangs_does_not_hold_the_caller() -> None:
    hanging = HangingExporter()
    configure(_settings(max_export_batch_size=5), exporters={"hang": hanging})
    EventStore.publish(Event(event_type="a.b"))
    assert hanging.entered.wait(5)
    for _ in range(100):  # the exporter thread is stuck; every one of these must still return
        EventStore.publish(Event(event_type="a.b"))
    assert not hanging.release.is_set() and hanging.exported == 0
    assert EventStore.stats()["hang"].accepted == 101
    assert EventStore.flush_sync(0.2) is False, "flush reports that it timed out while the exporter hangs"
    hanging.release.set()
    assert EventStore.flush_sync(5)
    assert hanging.exported == 101


def test_publish_works_with_a_closed_event_loop_and_without_one() -> None:
    configure(_settings(), exporters={"memory": (memory := InMemoryEventExporter())})
    loop = asyncio.new_event_loop()
    loop.close()
    asyncio.set_event_loop(loop)
    try:
        EventStore.publish(Event(event_type="a.b"))
        coroutine = EventStore.publish_event(Event(event_type="a.c"))
        with pytest.raises(StopIteration):  # completes at the first step: it never awaits the loop
            coroutine.send(None)
    finally:
        asyncio.set_event_loop(None)
    assert EventStore.flush_sync(5)
    assert [e.event_type for e in memory.events] == ["a.b", "a.c"]


def test_full_queue_drops_new_events_counts_them_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    hanging = HangingExporter()
    configure(_settings(max_queue_size=10, max_export_batch_size=1), exporters={"hang": hanging})
    EventStore.publish(Event(event_type="a.b"))
    assert hanging.entered.wait(5)  # the first event is in the exporter, the queue is empty
    for _ in range(30):
        EventStore.publish(Event(event_type="a.b"))
    stats = EventStore.stats()["hang"]
    assert (stats.accepted, stats.dropped, stats.pending) == (31, 20, 11)
    assert stats.dropped_reasons == {"queue_full": 20}
    assert len([r for r in caplog.records if "queue is full" in r.getMessage()]) == 1
    hanging.release.set()
    assert EventStore.flush_sync(5)
    assert hanging.exported == 11


@pytest.mark.parametrize(("interval_s", "warnings"), [(60.0, 1), (0.0, 5)])
def test_a_queue_full_again_and_again_is_warned_about_once_a_minute_and_every_drop_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, interval_s: float, warnings: int
) -> None:
    """Sustained overload of a small queue: full, drained, full again, five times. One warning a minute, not one
    per episode (with the interval at 0, one per episode: the episodes are real)."""
    monkeypatch.setattr(EpisodeWarning, "interval_s", interval_s)
    hanging = HangingExporter()
    configure(_settings(max_queue_size=4, max_export_batch_size=4), exporters={"hang": hanging})
    for _ in range(5):
        hanging.release.clear()
        hanging.entered.clear()
        EventStore.publish(Event(event_type="a.b"))
        assert hanging.entered.wait(5)  # the exporter holds this one; the queue is empty
        for _ in range(10):
            EventStore.publish(Event(event_type="a.b"))  # 4 queued, 6 dropped
        hanging.release.set()
        assert EventStore.flush_sync(5)  # drained: the episode ends
    stats = EventStore.stats()["hang"]
    assert (stats.accepted, stats.delivered, stats.dropped, stats.pending) == (55, 25, 30, 0)
    assert len([r for r in caplog.records if "queue is full" in r.getMessage()]) == warnings


class PermitExporter(LogRecordExporter):
    """Each export waits for one permit."""

    def __init__(self) -> None:
        self.permits = threading.Semaphore(0)
        self.waiting = threading.Semaphore(0)  # released as each export starts waiting

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.waiting.release()
        self.permits.acquire(timeout=30)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self.permits.release(100)


def test_a_queue_full_again_a_while_after_a_short_episode_is_warned_about_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first episode ends at once, and the exporter hangs again on the next event; the queue fills again
    after the interval and never drains: that episode is warned about too."""
    monkeypatch.setattr(EpisodeWarning, "interval_s", 0.5)
    exporter = PermitExporter()
    configure(_settings(max_queue_size=4, max_export_batch_size=4), exporters={"permits": exporter})
    EventStore.publish(Event(event_type="a.b"))
    assert exporter.waiting.acquire(timeout=5)  # the exporter holds the first event
    for _ in range(10):
        EventStore.publish(Event(event_type="a.b"))  # full: 4 queued, 6 dropped, warned
    exporter.permits.release(2)  # the first export, then the four queued: the queue is empty, the episode over
    wait_until(lambda: EventStore.stats()["permits"].pending == 0, timeout_s=5)
    assert exporter.waiting.acquire(timeout=5)  # the second export had started
    EventStore.publish(Event(event_type="a.b"))
    assert exporter.waiting.acquire(timeout=5)  # ... and hangs on the next event, within the interval
    time.sleep(0.6)
    for _ in range(10):
        EventStore.publish(Event(event_type="a.b"))  # full again, after the interval
    assert len([r for r in caplog.records if "queue is full" in r.getMessage()]) == 2
    stats = EventStore.stats()["permits"]
    assert (stats.accepted, stats.dropped, stats.pending) == (22, 12, 5)  # pending: one in the export, four queued
    exporter.permits.release(100)


class BlockingProcessor(RecordKeeper):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self.entered.set()
        self.release.wait(30)
        super().on_emit(log_record)


def test_a_stuck_processor_drops_new_events_counts_them_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    blocking = BlockingProcessor()
    configure(_settings(max_queue_size=10), processors=[blocking])
    EventStore.publish(Event(event_type="a.b"))
    assert blocking.entered.wait(5)  # the processor's thread is inside the first event
    for _ in range(30):
        EventStore.publish(Event(event_type="a.b"))
    [stats] = EventStore.stats().values()
    assert (stats.accepted, stats.dropped, stats.pending) == (31, 20, 11)
    assert len([r for r in caplog.records if "queue is full" in r.getMessage()]) == 1
    blocking.release.set()
    assert EventStore.flush_sync(5)
    assert len(blocking.records) == 11


async def test_the_log_record_carries_the_whole_event() -> None:
    keeper = RecordKeeper()
    configure(_settings(application_name="shop"), processors=[keeper])
    tracer = TracerProvider().get_tracer("test")
    event = Event(event_type="order.received", event_name="activity_end", data={"order_id": "o-1", "n": [1, 2.5]})
    with tracer.start_as_current_span("handle-order") as span:
        await EventStore.publish_event(event)
    assert await EventStore.flush(5)
    [record] = keeper.records
    log_record = record.log_record
    assert log_record.event_name == "order.received"
    assert log_record.attributes is not None
    assert log_record.attributes[EVENT_ID_ATTRIBUTE] == event.event_id
    assert log_record.attributes[EVENT_NAME_ATTRIBUTE] == "activity_end"
    assert log_record.trace_id == span.get_span_context().trace_id
    assert log_record.span_id == span.get_span_context().span_id
    assert log_record.timestamp is not None and log_record.timestamp // 10**9 >= (event.metadata.created_timestamp or 0)
    rebuilt = event_from_record(record)
    assert rebuilt == event and rebuilt is not event
    assert rebuilt is not None and rebuilt.metadata.application_name == "shop"
    assert record.resource.attributes["service.name"] == "shop"


async def test_a_span_event_is_added_to_the_current_recording_span() -> None:
    configure(_settings(), processors=[RecordKeeper()])  # span events are added on the caller's path
    tracer = TracerProvider().get_tracer("test")
    event = Event(event_type="order.received")
    with tracer.start_as_current_span("handle-order") as span:
        await EventStore.publish_event(event)
    [span_event] = span.events  # type: ignore[attr-defined]
    assert span_event.name == "order.received"
    assert span_event.attributes[EVENT_ID_ATTRIBUTE] == event.event_id


async def test_mutating_the_event_after_publish_does_not_change_what_is_delivered() -> None:
    configure(_settings(), exporters={"memory": (memory := InMemoryEventExporter())})
    event = Event(event_type="order.received", data={"status": "new"})
    await EventStore.publish_event(event)
    event.data["status"] = "changed-later"
    assert await EventStore.flush(5)
    assert memory.events[0].data == {"status": "new"}


def test_shutdown_drains_what_was_published() -> None:
    slow = HangingExporter()
    configure(_settings(), exporters={"slow": slow})
    for _ in range(20):
        EventStore.publish(Event(event_type="a.b"))
    threading.Timer(0.3, slow.release.set).start()
    EventStore.shutdown(timeout_s=10)
    assert slow.exported == 20
