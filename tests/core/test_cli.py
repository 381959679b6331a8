"""`appevents tail` and `appevents demo`, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appevents import Event, EventStore, configure
from appevents._demo.events import example_events
from appevents._settings import AppEventsSettings
from appevents._sqlite_log import LocalEventLog


def _run(*args: str, db: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APPEVENTS_LOCAL_PATH": str(db)}
    return subprocess.run(
        [sys.executable, "-m", "appevents", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def db_with_events(tmp_path: Path) -> tuple[Path, list[Event]]:
    db = tmp_path / "events.db"
    configure(AppEventsSettings(exporters=["local"], local_path=db))
    events = [
        Event(event_type="order.received", data={"order_id": "o-1"}),
        Event(event_type="order.received", data={"order_id": "o-2"}, metadata={"workflow_id": "wf-7"}),  # type: ignore[arg-type]
        Event(event_type="data_quality.alert", data={"severity": "error"}),
    ]
    for event in events:
        EventStore.publish(event)
    assert EventStore.flush_sync(5)
    return db, events


@pytest.mark.timeout(60)
def test_tail_json_prints_each_event_exactly_as_model_dump_json(
    db_with_events: tuple[Path, list[Event]],
) -> None:
    db, events = db_with_events
    result = _run("tail", "--json", db=db)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [e.model_dump_json() for e in events]
    assert [Event.model_validate_json(line) for line in lines] == events


@pytest.mark.timeout(60)
def test_tail_filters_and_prints_a_readable_table(db_with_events: tuple[Path, list[Event]]) -> None:
    db, events = db_with_events
    by_type = _run("tail", "--type", "order.received", db=db).stdout.splitlines()
    assert by_type[0].split()[:3] == ["TIME", "TYPE", "NAME"]
    assert len(by_type) == 3 and all("order.received" in line for line in by_type[1:])
    by_workflow = _run("tail", "--json", "--workflow-id", "wf-7", db=db).stdout.splitlines()
    assert by_workflow == [events[1].model_dump_json()]
    newest = _run("tail", "--json", "-n", "1", db=db).stdout.splitlines()
    assert newest == [events[2].model_dump_json()]


@pytest.mark.timeout(60)
def test_tail_follow_prints_events_as_they_land(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    LocalEventLog(db).close()
    env = {**os.environ, "APPEVENTS_LOCAL_PATH": str(db)}
    follower = subprocess.Popen(
        [sys.executable, "-m", "appevents", "tail", "--follow", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        configure(AppEventsSettings(exporters=["local"], local_path=db))
        event = Event(event_type="order.shipped", data={"order_id": "o-3"})
        EventStore.publish(event)
        assert EventStore.flush_sync(5)
        assert follower.stdout is not None
        assert follower.stdout.readline().strip() == event.model_dump_json()
    finally:
        follower.terminate()
        follower.wait(10)


@pytest.mark.timeout(120)
def test_demo_publishes_the_example_events_into_the_local_log(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result = _run("demo", "--no-temporal", db=db, timeout=100)
    assert result.returncode == 0, result.stderr
    expected = example_events()
    stored = list(LocalEventLog(db))
    assert [e.event_type for e in stored] == [e.event_type for e in expected]
    assert [e.data for e in stored] == [e.data for e in expected]
    # The footer says where the events went and how to see them again, not a rate that reads like throughput.
    assert f"{len(expected)} events are in the local event log {db} (local: {len(expected)} delivered)" in result.stdout
    assert f"appevents tail -n {len(expected)}" in result.stdout
    assert "events/s" not in result.stdout
    for event in stored:
        assert event.event_type in result.stdout
