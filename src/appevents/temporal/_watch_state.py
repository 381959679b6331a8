"""Where closed-run watchers stand, kept in an SQLite file (``APPEVENTS_TEMPORAL_WATCH_STATE_PATH``) so a restarted
watcher resumes at its watermark instead of re-reading its lookback window, and watchers on one host publish a
run's ``workflow_end`` once between them.

One row per reported run (namespace, task queue, run id, close time); a task queue's watermark is its newest close
time. A watcher *claims* a run (``INSERT OR IGNORE``) before it publishes it and gives the claim back if the
publish is refused; rows older than the overlap before the watermark are deleted. The file is created 0600 and
marked with ``PRAGMA application_id``; a file of something else is refused (ConfigurationError), never written.
Blocking calls: the watcher runs them in a thread.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from appevents._sqlite import claim_file, connect_wal, fork_safe

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
        self._lock = threading.Lock()
        # Created 0600 in 0700 directories, refused (and left as it was) when it is another application's file,
        # schema and mark in one transaction: the same rules as the spool and the event log.
        self._db = connect_wal(
            path,
            busy_timeout_s,
            autocommit=True,
            claim=lambda db: claim_file(
                db,
                application_id=WATCH_STATE_APPLICATION_ID,
                schema=_SCHEMA,
                path=path,
                what="an appevents watch state file",
                setting="APPEVENTS_TEMPORAL_WATCH_STATE_PATH",
            ),
        )

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
