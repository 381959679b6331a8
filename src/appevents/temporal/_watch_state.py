"""Where closed-run watchers stand, kept in an SQLite file (``APPEVENTS_TEMPORAL_WATCH_STATE_PATH``) so a restarted
watcher resumes at its watermark instead of re-reading its lookback window, and watchers on one host publish a
run's ``workflow_end`` once between them.

One row per reported run (namespace, task queue, run id, close time); a task queue's watermark is its newest close
time. A watcher *claims* a run (``INSERT OR IGNORE``) before it publishes it and gives the claim back if the
publish is refused; rows older than the overlap before the watermark are deleted. The file is created 0600 and
marked with ``PRAGMA application_id``; a SQLite file marked by something else is refused, never written into.
Blocking calls: the watcher runs them in a thread.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from appevents._sqlite import connect_wal, fork_safe, while_locked

__all__ = ["WATCH_STATE_APPLICATION_ID", "WatchState"]

#: ``PRAGMA application_id`` of a watch state file ("aeWS").
WATCH_STATE_APPLICATION_ID = 0x61655753

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reported (
    namespace TEXT NOT NULL,
    task_queue TEXT NOT NULL,
    run_id TEXT NOT NULL,
    close_time_us INTEGER NOT NULL,
    PRIMARY KEY (namespace, run_id)
);
CREATE INDEX IF NOT EXISTS reported_by_queue ON reported (namespace, task_queue, close_time_us);
"""


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _moment(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


class WatchState:
    """The reported runs of every namespace and task queue watched with this file."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # ours from the start: never world-readable
        self._lock = threading.Lock()
        self._db = connect_wal(path, busy_timeout_s, autocommit=True)
        try:
            marked = self._db.execute("PRAGMA application_id").fetchone()[0]
            if marked not in (0, WATCH_STATE_APPLICATION_ID):
                raise ValueError(f"{path} is an SQLite file of something else (application_id {marked:#x})")
            if marked == 0:
                if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise ValueError(f"{path} is an SQLite file of something else (it has tables, none of ours)")
                self._db.execute(f"PRAGMA application_id={WATCH_STATE_APPLICATION_ID}")
            while_locked(fork_safe(lambda: self._db.executescript(_SCHEMA)), busy_timeout_s)
        except BaseException:
            self._db.close()
            raise

    @fork_safe
    def load(self, namespace: str, task_queue: str) -> dict[str, datetime]:
        """The runs reported for ``task_queue`` and still kept, by run id, with their close times."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, close_time_us FROM reported WHERE namespace = ? AND task_queue = ?",
                (namespace, task_queue),
            ).fetchall()
        return {run_id: _moment(us) for run_id, us in rows}

    @fork_safe
    def claim(self, namespace: str, task_queue: str, run_id: str, close_time: datetime) -> bool:
        """Record the run as reported; False if a watcher (this one after a restart, or another on this host)
        already did."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO reported VALUES (?, ?, ?, ?)", (namespace, task_queue, run_id, _us(close_time))
            )
            return cursor.rowcount == 1

    @fork_safe
    def forget_before(self, namespace: str, task_queue: str, moment: datetime) -> None:
        """Delete the runs of ``task_queue`` closed before ``moment`` (out of every future query's window)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM reported WHERE namespace = ? AND task_queue = ? AND close_time_us < ?",
                (namespace, task_queue, _us(moment)),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
