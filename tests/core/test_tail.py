"""`appevents tail` as a safe reader: read-only (no table created, no journal mode switched), a clear message for a
file that is not an event log, control characters escaped, a quiet end on a closed pipe, no traceback on a crafted
file; and -n validated, --type repeated, the table fitted to the terminal width."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from appevents import Event
from appevents._event_table import column_widths, table_header
from appevents._sqlite_log import LocalEventLog

pytestmark = pytest.mark.timeout(60)


def _tail(*args: str, db: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "APPEVENTS_LOCAL_PATH": str(db), **env}
    full_env.pop("COLUMNS", None) if "COLUMNS" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "appevents", "tail", *args], env=full_env, capture_output=True, text=True, timeout=30
    )


def _store(db: Path, *events: Event) -> None:
    log = LocalEventLog(db)
    try:
        log.append([(event, event.model_dump_json(), None) for event in events])
    finally:
        log.close()


def _schema_and_mode(db: Path) -> tuple[list[tuple[str, str]], str, bytes]:
    with sqlite3.connect(db) as connection:
        schema = connection.execute("SELECT type, name FROM sqlite_master ORDER BY name").fetchall()
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
    connection.close()
    return schema, mode, db.read_bytes()


def test_an_ordinary_sqlite_file_is_named_and_left_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    connection.close()
    before = _schema_and_mode(db)

    run = _tail(db=db)

    assert run.returncode == 1
    assert "is not an appevents event log" in run.stderr
    assert "Traceback" not in run.stderr
    assert _schema_and_mode(db) == before  # no events table added, still in rollback-journal mode


def test_a_file_that_is_not_sqlite_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    run = _tail(db=path)
    assert run.returncode == 1
    assert "cannot be read as an SQLite database" in run.stderr
    assert "Traceback" not in run.stderr
    assert path.read_text() == "not a database\n" * 100


def test_a_missing_log_is_named_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "events.db"
    run = _tail(db=db)
    assert run.returncode == 1
    assert f"no event log at {db}" in run.stderr
    assert not db.parent.exists()


def test_an_event_log_in_another_journal_mode_is_read_without_switching_it(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    event = Event(event_type="order.received", data={"order_id": "o-1"})
    _store(db, event)
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
    connection.close()
    before = _schema_and_mode(db)

    run = _tail("--json", db=db)

    assert run.stdout.splitlines() == [event.model_dump_json()]
    assert _schema_and_mode(db) == before


def test_control_characters_are_escaped_in_the_table(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    hostile = "\x1b[2J\x1b]0;owned\x07\rX"
    _store(db, Event(event_type="order.received", event_name=hostile, metadata={"workflow_id": hostile}))  # type: ignore[arg-type]

    run = _tail(db=db)

    assert run.returncode == 0, run.stderr
    for character in ("\x1b", "\x07", "\r"):
        assert character not in run.stdout
    assert "\\x1b" in run.stdout


def test_a_closed_pipe_ends_tail_quietly(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _store(db, *[Event(event_type="order.received", data={"i": i}) for i in range(2000)])
    env = {**os.environ, "APPEVENTS_LOCAL_PATH": str(db)}
    reader = subprocess.Popen(
        [sys.executable, "-m", "appevents", "tail", "-n", "2000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.readline()
    reader.stdout.close()  # what `| head -1` does
    stderr = reader.stderr.read().decode()
    assert reader.wait(30) == 0
    assert stderr == ""


def test_a_crafted_log_gets_lines_not_a_traceback(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    good = Event(event_type="order.received")
    _store(db, good)
    with sqlite3.connect(db) as connection:
        rows = [
            ("not json", 1),
            (json.dumps([1, 2]), 2),  # JSON, not an event
            (good.model_copy(update={"event_id": str(uuid.uuid4())}).model_dump_json(), 1e30),  # no such time
            (good.model_copy(update={"event_id": str(uuid.uuid4())}).model_dump_json(), "text"),
        ]
        for body, published in rows:
            connection.execute(
                "INSERT INTO events (event_id, event_type, published_ns, body) VALUES (?, 'x.y', ?, ?)",
                (str(uuid.uuid4()), published, body),
            )
    connection.close()

    run = _tail(db=db)

    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout.count("<unreadable row") == 3  # not json, not an event, a published time of text
    assert run.stdout.count("order.received") == 2  # the good one, and the one with a time no calendar holds


@pytest.mark.parametrize("value", ["-1", "x", "1.5"])
def test_n_must_be_a_whole_number_of_zero_or_more(tmp_path: Path, value: str) -> None:
    run = _tail("-n", value, db=tmp_path / "events.db")
    assert run.returncode == 2
    assert "argument -n" in run.stderr


def test_repeated_type_options_accumulate(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    events = [Event(event_type=t) for t in ("order.received", "order.paid", "order.shipped")]
    _store(db, *events)
    run = _tail("--json", "--type", "order.received", "--type", "order.shipped", db=db)
    assert run.stdout.splitlines() == [events[0].model_dump_json(), events[2].model_dump_json()]


def test_the_table_fits_the_terminal_width(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _store(db, Event(event_type="data_quality.alert", event_name="activity_start", metadata={"workflow_id": "w" * 60}))  # type: ignore[arg-type]
    for columns in (80, 100, 120):
        lines = _tail(db=db, COLUMNS=str(columns)).stdout.splitlines()
        assert lines and max(len(line) for line in lines) <= columns
    wide = _tail(db=db).stdout.splitlines()  # to a pipe without COLUMNS: the full widths
    assert len(wide[0]) == len(table_header(column_widths()))


def test_follow_waits_for_a_log_that_does_not_exist_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from appevents import _cli

    db = tmp_path / "later" / "events.db"
    event = Event(event_type="order.shipped")
    sleeps: list[bool] = []

    def sleep(seconds: float) -> None:  # the first wait: the log appears; the next: the user presses Ctrl-C
        sleeps.append(db.exists())
        if len(sleeps) == 1:
            _store(db, event)
        else:
            raise KeyboardInterrupt

    args = argparse.Namespace(path=str(db), follow=True, json=True, type=None, workflow_id=None, n=20, interval=0.01)

    assert _cli._tail(args, wait=sleep) == 0
    assert sleeps[0] is False  # it waited for the log instead of creating it or giving up
    assert capsys.readouterr().out.splitlines() == [event.model_dump_json()]


def test_an_event_log_marked_by_another_application_is_not_read(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _store(db, Event(event_type="order.received"))
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA application_id = 1234")
    connection.close()
    run = _tail(db=db)
    assert run.returncode == 1
    assert "marked by another application" in run.stderr
