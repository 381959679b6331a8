"""Durable mode (``APPEVENTS_SPOOL_PATH``): events outlive an outage, a shutdown and the death of the process.

Each exporter reads the spool through its own cursor; an event leaves the spool once every exporter settled it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from appevents import AppEventsSettings, ConfigurationError, DeliveryStats, Event, EventStore, configure
from appevents._records import encode_event
from appevents._sqlite_log import LocalEventLog
from appevents.exporting import EncodedEvent, ExportOutcome
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


class Switchable:
    """An encoded-path exporter whose destination can be taken down and brought back."""

    def __init__(self, up: bool = True) -> None:
        self.up = threading.Event()
        if up:
            self.up.set()
        self.delivered: list[str] = []
        self.attempts = 0

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        self.attempts += 1
        if not self.up.is_set():
            return ExportOutcome(retry=list(batch), retry_reason="UNAVAILABLE: switched off")
        self.delivered.extend(event.event_id for event in batch)
        return ExportOutcome()

    def shutdown(self) -> None:
        pass


def _settings(spool: Path, **overrides: object) -> AppEventsSettings:
    return AppEventsSettings(
        **{"exporters": [], "spool_path": spool, "schedule_delay_ms": 20, **overrides}  # type: ignore[arg-type]
    )


def assert_identity(stats: DeliveryStats) -> None:
    assert stats.accepted == stats.delivered + stats.failed + stats.dropped + stats.pending, stats


def spooled_rows(spool: Path) -> int:
    with sqlite3.connect(spool) as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def test_events_stay_spooled_while_the_destination_is_down_and_are_delivered_when_it_returns(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    down, up = Switchable(up=False), Switchable()
    configure(_settings(spool), exporters={"down": down, "up": up})
    events = [Event(event_type="a.b", data={"n": n}) for n in range(300)]
    for event in events:
        EventStore.publish(event)
    assert EventStore.flush_sync(0.5) is False  # "down" cannot settle them
    stats = EventStore.stats()
    assert stats["up"].delivered == 300, "each exporter has its own cursor: one down does not hold the other"
    assert (stats["down"].pending, stats["down"].failed) == (300, 0)
    assert spooled_rows(spool) == 300, "an event leaves the spool only when every exporter settled it"
    assert wait_until(lambda: down.attempts >= 3), "offered again with backoff"
    down.up.set()
    assert EventStore.flush_sync(15)
    assert sorted(down.delivered) == sorted(e.event_id for e in events)
    for name in ("down", "up", "spool"):
        assert_identity(EventStore.stats()[name])
    assert EventStore.shutdown(5)
    assert spooled_rows(spool) == 0


def test_what_is_left_at_shutdown_stays_in_the_spool_and_the_next_pipeline_delivers_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.db"
    configure(_settings(spool), exporters={"dest": Switchable(up=False)})
    events = [Event(event_type="a.b", data={"n": n}) for n in range(50)]
    for event in events:
        EventStore.publish(event)
    assert EventStore.shutdown(timeout_s=0.5) is True, "kept in the spool is not lost"
    [report] = [r.getMessage() for r in caplog.records if "did not deliver everything" in r.getMessage()]
    assert (
        "dest: 0 of 50 delivered, 50 not delivered yet (in the spool)" in report
        and "spool: 50 event(s) of this run kept" in report
        and str(spool) in report
    )
    assert spooled_rows(spool) == 50

    dest = Switchable()
    configure(_settings(spool), exporters={"dest": dest})
    assert wait_until(lambda: len(dest.delivered) == 50)
    assert sorted(dest.delivered) == sorted(e.event_id for e in events)
    assert EventStore.flush_sync(5) and EventStore.shutdown(5)
    assert spooled_rows(spool) == 0


def test_a_full_spool_refuses_the_newest_events_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.db"
    dest = Switchable(up=False)
    configure(_settings(spool, spool_max_bytes=40_000), exporters={"dest": dest})
    size = len(Event(event_type="a.b", data={"n": 0}).model_dump_json()) + 300  # enriched
    published = 200
    for n in range(published):
        EventStore.publish(Event(event_type="a.b", data={"n": n}))
    assert EventStore.pipeline().writer.flush(time.monotonic() + 5)  # type: ignore[union-attr]
    spool_stats = EventStore.stats()["spool"]
    assert_identity(spool_stats)
    assert spool_stats.accepted == published
    assert spool_stats.dropped == spool_stats.dropped_reasons["spool_full"] > 0
    assert spool_stats.delivered <= 40_000 // (size - 300) and spool_stats.delivered == spooled_rows(spool)
    assert EventStore.stats()["dest"].accepted == spool_stats.delivered
    assert len([r for r in caplog.records if "is full (40000 bytes)" in r.getMessage()]) == 1
    dest.up.set()
    assert EventStore.flush_sync(10)
    assert len(dest.delivered) == spool_stats.delivered


def test_wait_returns_once_the_event_is_committed_even_with_the_destination_down(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    configure(_settings(spool, spool_commit_interval_ms=5000), exporters={"dest": Switchable(up=False)})
    event = Event(event_type="a.b")
    assert EventStore.publish(event, wait=True, timeout_s=5) is True  # committed at once, not at the 5 s timer
    with sqlite3.connect(spool) as db:
        assert db.execute("SELECT event_id FROM events").fetchall() == [(event.event_id,)]
    assert EventStore.shutdown(timeout_s=0.2), "kept in the spool, not lost"


def test_an_unusable_spool_path_is_refused_by_configure_naming_the_path_and_the_os_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(ConfigurationError) as refused:
        configure(_settings(blocker / "spool.db"), exporters={"dest": Switchable()})
    assert str(blocker / "spool.db") in str(refused.value) and "NotADirectoryError" in str(refused.value)


def test_an_exporter_named_like_the_spool_stage_is_refused_in_durable_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="named 'spool'"):
        configure(_settings(tmp_path / "spool.db"), exporters={"spool": Switchable()})
    assert not (tmp_path / "spool.db").exists()  # refused before the spool was opened
    configure(AppEventsSettings(exporters=[]), exporters={"spool": Switchable()})  # no spool stage: a fine name
    assert EventStore.publish(Event(event_type="a.b"))
    assert EventStore.flush_sync(5)
    assert EventStore.stats()["spool"].delivered == 1


PUBLISHER = textwrap.dedent(
    """
    import sys
    from appevents import AppEventsSettings, Event, EventStore, configure

    configure(AppEventsSettings(exporters=["local"]))
    n = 0
    while True:
        event = Event(event_type="order.received", data={"n": n})
        if EventStore.publish(event, wait=True, timeout_s=10):
            print(event.event_id, flush=True)  # only once the spool has it
        n += 1
    """
)


def test_events_whose_wait_returned_survive_kill_9_and_are_delivered_after_restart(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    env = {**os.environ, "APPEVENTS_SPOOL_PATH": str(spool), "APPEVENTS_SPOOL_COMMIT_INTERVAL_MS": "2"}
    # The destination is unusable while the publisher runs: the event log's directory is a file.
    (tmp_path / "blocked").write_text("")
    env["APPEVENTS_LOCAL_PATH"] = str(tmp_path / "blocked" / "events.db")
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    acknowledged: list[str] = []
    try:
        assert publisher.stdout is not None
        while len(acknowledged) < 300:
            line = publisher.stdout.readline()
            assert line, publisher.stderr.read() if publisher.stderr else ""
            acknowledged.append(line.strip())
        publisher.send_signal(signal.SIGKILL)
        acknowledged += [line.strip() for line in publisher.stdout.read().splitlines() if line.strip()]
    finally:
        publisher.kill()
        publisher.wait(10)
    assert publisher.returncode == -signal.SIGKILL

    # Restarted with the same spool and its destination working again (the same log file, whose directory now
    # exists): the dead process's events are replayed there.
    (tmp_path / "blocked").unlink()
    log_path = tmp_path / "blocked" / "events.db"
    configure(AppEventsSettings(exporters=["local"], spool_path=spool, local_path=log_path, schedule_delay_ms=20))
    assert wait_until(lambda: log_path.exists() and LocalEventLog(log_path).count() >= len(acknowledged), 20)
    stored = {stored.event().event_id for stored in LocalEventLog(log_path).query()}
    assert set(acknowledged) <= stored
    assert EventStore.flush_sync(10) and EventStore.shutdown(5)
    assert spooled_rows(spool) == 0


def test_a_spooled_event_reaches_otel_exporters_as_a_proper_log_record(tmp_path: Path) -> None:
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
    from opentelemetry.sdk.trace import TracerProvider

    records = InMemoryLogRecordExporter()
    configure(_settings(tmp_path / "spool.db"), exporters={"otel": records})
    event = Event(event_type="order.received", data={"n": 1})
    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        EventStore.publish(event)
    assert EventStore.flush_sync(5)
    [record] = records.get_finished_logs()
    assert record.log_record.event_name == "order.received"
    assert json.loads(str(record.log_record.body))["event_id"] == event.event_id
    assert record.log_record.trace_id == span.get_span_context().trace_id
    assert record.log_record.span_id == span.get_span_context().span_id


def test_flush_waits_for_events_the_writer_could_not_commit_yet(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    dest = Switchable()
    configure(_settings(spool), exporters={"dest": dest})
    assert EventStore.publish(Event(event_type="a.b"), wait=True)  # the spool exists and is live
    blocker = sqlite3.connect(spool, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        for n in range(100):
            EventStore.publish(Event(event_type="a.b", data={"n": n}))
        assert EventStore.flush_sync(0.5) is False, "nothing is committed, let alone delivered"
        stats = EventStore.stats()["spool"]
        assert (stats.accepted, stats.delivered, stats.pending) == (101, 1, 100)
    finally:
        blocker.execute("ROLLBACK")
    assert EventStore.flush_sync(10)
    assert len(dest.delivered) == 101


def test_a_read_error_does_not_stop_the_exporter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import appevents._spool

    real_read = appevents._spool.SpoolReader.read
    calls = {"n": 0}

    def flaky_read(self: appevents._spool.SpoolReader, owner: str, after_seq: int, limit: int) -> list[EncodedEvent]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise sqlite3.OperationalError("database is locked")
        return real_read(self, owner, after_seq, limit)

    monkeypatch.setattr(appevents._spool.SpoolReader, "read", flaky_read)
    dest = Switchable()
    configure(_settings(tmp_path / "spool.db"), exporters={"dest": dest})
    for batch in range(3):
        for n in range(10):
            EventStore.publish(Event(event_type="a.b", data={"n": n, "batch": batch}))
        assert EventStore.flush_sync(10)
    assert len(dest.delivered) == 30 and calls["n"] > 2


def test_a_live_owner_with_a_stale_heartbeat_is_not_adopted(tmp_path: Path) -> None:
    from appevents._spool import Spool

    path = tmp_path / "spool.db"
    live = Spool(path, max_bytes=10**9, exporters=["dest"])  # this process: alive, whatever its heartbeat says
    event = Event(event_type="a.b")
    live.append([encode_event(event)])
    live.commit()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE owners SET heartbeat_ns = 0")  # suspended for minutes, or the wall clock stepped
    other = Spool(path, max_bytes=10**9, exporters=["dest"])
    assert other.claim_orphans() == ([], [])
    live.close()  # closed with a row left: now it is an orphan
    [orphan], left = other.claim_orphans()
    assert orphan.owner == live.owner and left == []


def test_orphans_are_left_for_a_pipeline_that_has_their_exporters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.db"
    configure(_settings(spool), exporters={"dapr": Switchable(up=False)})
    for n in range(30):
        EventStore.publish(Event(event_type="a.b", data={"n": n}))
    assert EventStore.shutdown(0.5)
    assert spooled_rows(spool) == 30

    configure(_settings(spool), exporters={"local": (other := Switchable())})  # another app on the same spool
    time.sleep(0.3)
    assert EventStore.flush_sync(5) and EventStore.shutdown(5)
    assert other.delivered == [] and spooled_rows(spool) == 30, "not settled without the exporter they were for"
    assert any("not configured here: dapr (" in r.getMessage() for r in caplog.records)

    dapr = Switchable()
    configure(_settings(spool), exporters={"dapr": dapr})
    assert wait_until(lambda: len(dapr.delivered) == 30)


def test_an_otel_exporter_that_fails_keeps_its_events_spooled(tmp_path: Path) -> None:
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

    class Collector(LogRecordExporter):
        def __init__(self) -> None:
            self.up = False
            self.records: list[ReadableLogRecord] = []

        def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
            if not self.up:
                return LogRecordExportResult.FAILURE
            self.records.extend(batch)
            return LogRecordExportResult.SUCCESS

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return True

        def shutdown(self) -> None:
            pass

    collector = Collector()
    configure(_settings(tmp_path / "spool.db"), exporters={"otlp": collector})
    for n in range(20):
        EventStore.publish(Event(event_type="a.b", data={"n": n}))
    assert EventStore.flush_sync(0.5) is False
    assert EventStore.stats()["otlp"].pending == 20
    collector.up = True
    assert EventStore.flush_sync(10)
    assert len(collector.records) == 20 and EventStore.stats()["otlp"].failed == 0
