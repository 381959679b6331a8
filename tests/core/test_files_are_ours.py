"""The spool and the local event log are files that know what they are: marked as ours (``PRAGMA
application_id``), private (0600 files, 0700 directories, whatever the umask), and another database is refused
with its path named and left exactly as it was."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from appevents import AppEventsSettings, ConfigurationError, Event, EventStore, configure
from appevents._spool import SPOOL_APPLICATION_ID, Spool
from appevents._sqlite_log import LOG_APPLICATION_ID, LocalEventLog

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign_database(path: Path) -> str:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.close()
    return _digest(path)


def _application_id(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA application_id").fetchone()[0])
    finally:
        db.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_another_database_is_refused_as_a_spool_naming_the_path_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    before = _foreign_database(path)
    with pytest.raises(ConfigurationError) as refused:
        configure(AppEventsSettings(exporters=["local"], spool_path=path))
    assert str(path) in str(refused.value) and "APPEVENTS_SPOOL_PATH" in str(refused.value)
    assert _digest(path) == before
    assert not Path(f"{path}-wal").exists()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    db.close()


def test_another_database_is_refused_as_the_local_log_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    before = _foreign_database(path)
    with pytest.raises(ConfigurationError) as refused:
        LocalEventLog(path)
    assert str(path) in str(refused.value) and "APPEVENTS_LOCAL_PATH" in str(refused.value)
    assert _digest(path) == before


def test_a_published_event_aimed_at_a_foreign_log_is_reported_not_written_there(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    before = _foreign_database(path)
    configure(AppEventsSettings(exporters=["local"], local_path=path, schedule_delay_ms=20))
    EventStore.pipeline().exporter("local").retry_window_s = 0.2  # type: ignore[union-attr]
    assert EventStore.publish(Event(event_type="order.received"))
    assert EventStore.flush_sync(5)
    stats = EventStore.stats()["local"]
    assert (stats.accepted, stats.failed) == (1, 1)
    assert _digest(path) == before


def test_a_database_with_a_conflicting_events_table_is_refused_and_gets_none_of_our_tables(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)")
    db.close()
    before = _digest(path)
    with pytest.raises(ConfigurationError, match="events"):
        Spool(path, max_bytes=1 << 20, exporters=["local"])
    assert _digest(path) == before
    db = sqlite3.connect(path)
    assert [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["events"]
    db.close()


def test_new_files_are_marked_as_ours(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_bytes=1 << 20, exporters=["local"])
    spool.close()
    LocalEventLog(tmp_path / "events.db").close()
    assert _application_id(tmp_path / "spool.db") == SPOOL_APPLICATION_ID
    assert _application_id(tmp_path / "events.db") == LOG_APPLICATION_ID
    # Opened again: recognised, nothing refused.
    Spool(tmp_path / "spool.db", max_bytes=1 << 20, exporters=["local"]).close()
    LocalEventLog(tmp_path / "events.db").close()


def test_an_unmarked_file_with_exactly_our_tables_is_taken_and_marked(tmp_path: Path) -> None:
    """Files written before the marking (same tables, same columns) are still ours."""
    path = tmp_path / "events.db"
    LocalEventLog(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 0")
    db.commit()
    db.close()
    log = LocalEventLog(path)
    log.close()
    assert _application_id(path) == LOG_APPLICATION_ID


def test_a_spool_marked_by_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 1234")
    db.commit()
    db.close()
    with pytest.raises(ConfigurationError, match="application_id"):
        Spool(path, max_bytes=1 << 20, exporters=["local"])


def test_a_file_that_is_not_a_database_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = _digest(path)
    with pytest.raises(ConfigurationError) as refused:
        LocalEventLog(path)
    assert str(path) in str(refused.value)
    assert _digest(path) == before


@pytest.mark.usefixtures("umask_022")
def test_spool_log_and_their_journals_are_private_whatever_the_umask(tmp_path: Path) -> None:
    spool_path = tmp_path / "state" / "spool" / "spool.db"
    log_path = tmp_path / "data" / "events.db"
    tmp_path.chmod(0o755)
    configure(AppEventsSettings(exporters=["local"], local_path=log_path, spool_path=spool_path))
    assert EventStore.publish(Event(event_type="order.received"), wait=True)
    assert EventStore.flush_sync(10)
    for path in (spool_path, log_path):
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert file.exists(), file
            assert _mode(file) == 0o600, (file, oct(_mode(file)))
    for directory in (tmp_path / "state", tmp_path / "state" / "spool", tmp_path / "data"):
        assert _mode(directory) == 0o700, (directory, oct(_mode(directory)))
    assert _mode(tmp_path) == 0o755  # an existing directory keeps the mode its owner gave it
