"""The embedded default: an SQLite event log that survives restarts, ignores duplicates, takes many writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appevents import Event, EventStore, configure
from appevents._records import encode_event
from appevents._settings import AppEventsSettings
from appevents._sqlite_log import LocalEventLog, LocalExporter
from appevents.exporting import EncodedEvent

_PUBLISHER = """
import sys
from appevents import Event, EventStore
for i in range(int(sys.argv[1])):
    EventStore.publish(Event(event_type="batch.item", data={"writer": sys.argv[2], "i": i}))
"""  # no explicit flush: the exit path (atexit shutdown) must deliver what was published


def _publish_in_subprocess(db: Path, count: int, writer: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "APPEVENTS_LOCAL_PATH": str(db), "APPEVENTS_EXPORTERS": "local"}
    return subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(count), writer], env=env)


@pytest.mark.timeout(60)
def test_events_persist_across_process_restarts(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    assert _publish_in_subprocess(db, 50, "first").wait(30) == 0
    assert _publish_in_subprocess(db, 30, "second").wait(30) == 0
    writers = [e.data["writer"] for e in LocalEventLog(db)]
    assert writers.count("first") == 50 and writers.count("second") == 30


@pytest.mark.timeout(60)
def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    LocalEventLog(db).close()  # both writers find the schema ready; WAL lets them interleave
    procs = [_publish_in_subprocess(db, 2000, name) for name in ("a", "b")]
    assert [p.wait(45) for p in procs] == [0, 0]
    log = LocalEventLog(db)
    assert log.count() == 4000
    for writer in ("a", "b"):
        assert sorted(e.data["i"] for e in log if e.data["writer"] == writer) == list(range(2000))  # type: ignore[type-var]


def test_a_redelivered_event_is_stored_once(tmp_path: Path) -> None:
    configure(AppEventsSettings(exporters=["local"], local_path=tmp_path / "dup.db"))
    event = Event(event_type="order.received", data={"order_id": "o-1"})
    EventStore.publish(event)
    EventStore.publish(Event.model_validate_json(event.model_dump_json()))
    assert EventStore.flush_sync(5)
    assert EventStore.stats()["local"].delivered == 2
    log = LocalEventLog(tmp_path / "dup.db")
    assert log.count() == 1
    [stored] = log.query()
    assert stored.body == event.model_dump_json()
    assert json.loads(stored.body)["event_id"] == event.event_id


def test_query_filters_by_type_and_workflow_and_keeps_the_newest(tmp_path: Path) -> None:
    configure(AppEventsSettings(exporters=["local"], local_path=tmp_path / "q.db"))
    for i in range(5):
        EventStore.publish(Event(event_type="order.received", data={"i": i}))
    EventStore.publish(Event(event_type="order.shipped", metadata={"workflow_id": "wf-9"}))  # type: ignore[arg-type]
    assert EventStore.flush_sync(5)
    log = LocalEventLog(tmp_path / "q.db")
    assert [e.event().data["i"] for e in log.query(event_type="order.received", last=2)] == [3, 4]
    assert [e.event().event_type for e in log.query(workflow_id="wf-9")] == ["order.shipped"]
    first_two = log.query(last=None)[:2]
    assert [e.event().data["i"] for e in log.query(after_seq=first_two[1].seq, event_type="order.received")] == [
        2,
        3,
        4,
    ]


_KILLED_PUBLISHER = """
import os, signal
from appevents import Event, EventStore
for i in range(1000):
    EventStore.publish(Event(event_type="batch.item", data={"i": i}))
os.kill(os.getpid(), signal.SIGTERM)  # as an orchestrator stopping the container would
import time
time.sleep(30)
"""


@pytest.mark.timeout(60)
def test_sigterm_drains_queued_events_before_the_process_ends(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    env = {**os.environ, "APPEVENTS_LOCAL_PATH": str(db), "APPEVENTS_EXPORTERS": "local"}
    result = subprocess.run([sys.executable, "-c", _KILLED_PUBLISHER], env=env, timeout=45)
    assert result.returncode == 128 + 15
    assert sorted(e.data["i"] for e in LocalEventLog(db)) == list(range(1000))  # type: ignore[type-var]


def test_a_body_that_is_not_an_event_fails_alone_and_its_batch_is_stored(tmp_path: Path) -> None:
    exporter = LocalExporter(tmp_path / "events.db")
    good = [encode_event(Event(event_type="batch.item", data={"i": i})) for i in range(200)]
    bad = EncodedEvent("4f3c2b1a-0000-4000-8000-000000000000", "batch.item", b"[not an event", {}, 1)
    outcome = exporter.export_events([*good[:100], bad, *good[100:]])
    assert outcome.failed == [(bad, "invalid_body")] and outcome.retry == [] and outcome.dropped == []
    assert LocalEventLog(tmp_path / "events.db").count() == 200
    again = exporter.export_events(good[:10])  # re-delivered after a restart: ignored, and not a failure
    assert (again.failed, again.retry) == ([], [])
    assert LocalEventLog(tmp_path / "events.db").count() == 200
    exporter.shutdown()


def test_an_unusable_log_path_is_named_with_the_os_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    configure(AppEventsSettings(exporters=["local"], local_path=blocker / "events.db", schedule_delay_ms=20))
    EventStore.pipeline().exporter("local").retry_window_s = 0.2  # type: ignore[union-attr]
    EventStore.publish(Event(event_type="batch.item"))
    assert EventStore.flush_sync(5)
    stats = EventStore.stats()["local"]
    assert (stats.failed, stats.failed_reasons) == (1, {"unavailable": 1})
    [message] = [r.getMessage() for r in caplog.records if "could not deliver" in r.getMessage()]
    assert str(blocker / "events.db") in message and "NotADirectoryError" in message


def test_a_log_locked_by_another_process_for_a_moment_is_retried_not_failed(tmp_path: Path) -> None:
    import sqlite3
    import threading

    path = tmp_path / "events.db"
    LocalEventLog(path).close()
    holder = sqlite3.connect(path, timeout=0.1, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    threading.Timer(0.5, holder.execute, ["ROLLBACK"]).start()
    exporter = LocalExporter(path)
    exporter._open()._db.execute("PRAGMA busy_timeout = 50")  # its own wait is short; the exporter's retry is not
    outcome = exporter.export_events([encode_event(Event(event_type="batch.item", data={"i": i})) for i in range(3)])
    assert (outcome.failed, outcome.retry) == ([], [])
    assert LocalEventLog(path).count() == 3
    exporter.shutdown()
