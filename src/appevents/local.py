"""The embedded default destination: an SQLite event log (``APPEVENTS_LOCAL_PATH``).

It plays the part Dapr's ``bindings.localstorage`` plays in the seed's local setup, but it can be queried:
one row per event, the event id unique (a re-delivered event is ignored), WAL mode so several processes can
write while ``appevents tail`` reads.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from appevents.models import Event
from appevents.records import event_from_json, event_json_from_record
from appevents.settings import AppEventsSettings

__all__ = ["LocalEventLog", "LocalExporter", "StoredEvent", "create_local_exporter"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    event_name TEXT,
    created_timestamp INTEGER,
    published_ns INTEGER,
    application_name TEXT,
    tenant_id TEXT,
    workflow_id TEXT,
    workflow_run_id TEXT,
    activity_id TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_type ON events (event_type);
CREATE INDEX IF NOT EXISTS events_by_workflow ON events (workflow_id);
"""


@dataclass(frozen=True)
class StoredEvent:
    """One row of the log: its position, when it was published (ns) and the event JSON."""

    seq: int
    published_ns: int | None
    body: str

    def event(self) -> Event:
        return event_from_json(self.body)


class LocalEventLog:
    """Read and write access to the SQLite event log at ``path``."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            self._db.executescript(_SCHEMA)

    def append(self, events: Sequence[tuple[Event, str, int | None]]) -> int:
        """Store ``(event, event_json, published_ns)`` rows in one transaction; returns how many were new."""
        rows = [
            (
                event.event_id,
                event.event_type,
                event.event_name,
                event.metadata.created_timestamp,
                published_ns,
                event.metadata.application_name,
                event.metadata.tenant_id,
                event.metadata.workflow_id,
                event.metadata.workflow_run_id,
                event.metadata.activity_id,
                body,
            )
            for event, body, published_ns in events
        ]
        with self._lock, self._db:
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO events (event_id, event_type, event_name, created_timestamp, published_ns,"
                " application_name, tenant_id, workflow_id, workflow_run_id, activity_id, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._db.total_changes - before

    def query(
        self,
        *,
        event_type: str | None = None,
        workflow_id: str | None = None,
        after_seq: int = 0,
        last: int | None = None,
    ) -> list[StoredEvent]:
        """Events in publication order; ``last`` keeps only the newest N; ``after_seq`` for following."""
        where = ["seq > ?"]
        params: list[object] = [after_seq]
        if event_type is not None:
            where.append("event_type = ?")
            params.append(event_type)
        if workflow_id is not None:
            where.append("workflow_id = ?")
            params.append(workflow_id)
        sql = f"SELECT seq, published_ns, body FROM events WHERE {' AND '.join(where)} ORDER BY seq"
        if last is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT ?) ORDER BY seq"
            params.append(last)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [StoredEvent(seq, published_ns, body) for seq, published_ns, body in rows]

    def last_seq(self) -> int:
        """Position of the newest event (0 for an empty log): ``query(after_seq=...)`` continues from it."""
        with self._lock:
            (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        return int(seq)

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(n)

    def __iter__(self) -> Iterator[Event]:
        return (stored.event() for stored in self.query())

    def close(self) -> None:
        with self._lock:
            self._db.close()


class LocalExporter(LogRecordExporter):
    """OTel log exporter that appends appevents events to a :class:`LocalEventLog`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._log: LocalEventLog | None = None

    def _open(self) -> LocalEventLog:
        # Opened on the exporter thread at first export: configure() and the caller's path touch no disk.
        if self._log is None:
            self._log = LocalEventLog(self.path)
        return self._log

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        rows: list[tuple[Event, str, int | None]] = []
        for record in batch:
            body = event_json_from_record(record)
            if body is not None:
                rows.append((event_from_json(body), body, record.log_record.timestamp))
        if rows:
            self._open().append(rows)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def create_local_exporter(settings: AppEventsSettings) -> LocalExporter:
    """``local`` entry point: the SQLite log at ``APPEVENTS_LOCAL_PATH``."""
    return LocalExporter(settings.local_path)
