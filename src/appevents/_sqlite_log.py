"""The embedded default destination: an SQLite event log (``APPEVENTS_LOCAL_PATH``).

It plays the part Dapr's ``bindings.localstorage`` plays in the Atlan application-sdk's local setup, but it can be
queried: one row per event, the event id unique (a re-delivered event is ignored), WAL mode so several processes
can write while ``appevents tail`` reads.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from appevents._counting import LogOnce
from appevents._encoded import EncodedEvent, ExportOutcome
from appevents._errors import ConfigurationError
from appevents._models import Event
from appevents._records import encoded_from_record, event_from_json
from appevents._settings import AppEventsSettings
from appevents._sqlite import claim_file, connect_wal, fork_safe, insert_rows

__all__ = ["LocalEventLog", "LocalExporter", "NotAnEventLog", "StoredEvent", "create_local_exporter"]

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

#: ``PRAGMA application_id`` of an event log file ("AELG"): a file without it is not taken for a log.
LOG_APPLICATION_ID = 0x41454C47


_INSERT_BODIES = (
    "INSERT OR IGNORE INTO events (event_id, event_type, event_name, created_timestamp, published_ns,"
    " application_name, tenant_id, workflow_id, workflow_run_id, activity_id, body)"
    " SELECT column1, column2, json_extract(column4, '$.event_name'),"
    " json_extract(column4, '$.metadata.created_timestamp'), column3,"
    " json_extract(column4, '$.metadata.application_name'), json_extract(column4, '$.metadata.tenant_id'),"
    " json_extract(column4, '$.metadata.workflow_id'), json_extract(column4, '$.metadata.workflow_run_id'),"
    " json_extract(column4, '$.metadata.activity_id'), column4"
    " FROM (VALUES {rows}) WHERE CASE WHEN json_valid(column4) THEN json_type(column4) = 'object' END"
)


@dataclass(frozen=True)
class StoredEvent:
    """One row of the log: its position, when it was published (ns) and the event JSON."""

    seq: int
    published_ns: int | None
    body: str

    def event(self) -> Event:
        return event_from_json(self.body)


class NotAnEventLog(Exception):
    """What a reader opened is not an appevents event log (no such file, not SQLite, no ``events`` table)."""


#: The columns a reader relies on: a file without them is not an event log.
_READ_COLUMNS = frozenset({"seq", "published_ns", "body", "event_type", "workflow_id"})


@fork_safe
def _connect_read_only(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A read-only connection to an existing event log: no table is created, the journal mode is left as it is;
    :class:`NotAnEventLog` when ``path`` is not one."""
    if not path.is_file():
        raise NotAnEventLog(f"no event log at {path}" + (" (a directory)" if path.is_dir() else ""))
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, check_same_thread=False)
    try:
        (marked,) = db.execute("PRAGMA application_id").fetchone()
        columns = {str(row[1]) for row in db.execute("PRAGMA table_info(events)")}
    except sqlite3.Error as exc:
        db.close()
        raise NotAnEventLog(f"{path} cannot be read as an SQLite database ({exc})") from None
    if marked not in (0, LOG_APPLICATION_ID):  # 0: a log written before logs were marked
        db.close()
        raise NotAnEventLog(f"{path} is not an appevents event log (marked by another application: {marked:#x})")
    if not columns >= _READ_COLUMNS:
        db.close()
        raise NotAnEventLog(f"{path} is not an appevents event log (it has no events table of the local exporter)")
    return db


class LocalEventLog:
    """Read and write access to the SQLite event log at ``path``; with ``read_only``, reading an existing log
    without changing anything in it (what ``appevents tail`` does)."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 30.0, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if read_only:
            self._db = _connect_read_only(self.path, busy_timeout_s)
            return
        self._db = connect_wal(
            self.path,
            busy_timeout_s,
            claim=lambda db: claim_file(
                db,
                application_id=LOG_APPLICATION_ID,
                schema=_SCHEMA,
                path=self.path,
                what="an appevents event log",
                setting="APPEVENTS_LOCAL_PATH",
            ),
        )

    def append(self, events: Sequence[tuple[Event, str, int | None]]) -> int:
        """Store ``(event, event_json, published_ns)`` rows in one transaction; returns how many were new."""
        return self.append_rows(
            [
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
        )

    @fork_safe
    def append_rows(self, rows: Sequence[tuple[object, ...]]) -> int:
        """Store rows (the ``events`` columns but ``seq``, in order) in one transaction; returns how many were new
        (an event id already stored is ignored: re-delivery after a restart is harmless)."""
        with self._lock, self._db:
            before = self._db.total_changes
            insert_rows(
                self._db,
                "INSERT OR IGNORE INTO events (event_id, event_type, event_name, created_timestamp, published_ns,"
                " application_name, tenant_id, workflow_id, workflow_run_id, activity_id, body) VALUES {rows}",
                11,
                rows,
            )
            return self._db.total_changes - before

    @fork_safe
    def append_bodies(self, rows: Sequence[tuple[str, str, int | None, str]]) -> list[str]:
        """Store ``(event_id, event_type, published_ns, event_json)`` rows in one transaction, the other columns
        read from the JSON by SQLite (off the GIL). Returns the ids of rows not stored because their JSON is not
        an object; an id already stored is not stored again and is not among them."""
        with self._lock, self._db:
            before = self._db.total_changes
            insert_rows(self._db, _INSERT_BODIES, 4, rows)
            if self._db.total_changes - before == len(rows):
                return []
            ids = [row[0] for row in rows]
            present: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                present.update(
                    i for (i,) in self._db.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
                )
            return [i for i in ids if i not in present]

    @fork_safe
    def query(
        self,
        *,
        event_type: str | Sequence[str] | None = None,
        workflow_id: str | None = None,
        after_seq: int = 0,
        last: int | None = None,
    ) -> list[StoredEvent]:
        """Events in publication order; ``event_type`` one type or any of several; ``last`` keeps only the newest
        N; ``after_seq`` for following."""
        where = ["seq > ?"]
        params: list[object] = [after_seq]
        if event_type is not None:
            types = [event_type] if isinstance(event_type, str) else list(event_type)
            where.append(f"event_type IN ({', '.join('?' * len(types))})")
            params.extend(types)
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

    @fork_safe
    def last_seq(self) -> int:
        """Position of the newest event (0 for an empty log): ``query(after_seq=...)`` continues from it."""
        with self._lock:
            (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        return int(seq)

    @fork_safe
    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(n)

    def __iter__(self) -> Iterator[Event]:
        return (stored.event() for stored in self.query())

    @fork_safe
    def close(self) -> None:
        with self._lock:
            self._db.close()


class LocalExporter(LogRecordExporter):
    """Appends appevents events to a :class:`LocalEventLog` (an :class:`~appevents.exporting.EventExporter`).

    Rows are stored as published: the index columns come from a plain JSON parse of the body, never a
    re-validation into an :class:`Event`. A batch that SQLite refuses as a whole is stored event by event, so
    one row it cannot take fails alone.
    """

    #: One transaction costs a few GIL round trips (5 ms each beside a busy publisher) whatever its size: big
    #: batches are what let the log keep up with a tight publishing loop.
    max_batch_size = 4096

    #: How long one export keeps trying a log that cannot be opened or written before returning the batch.
    retry_window_s = 5.0

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._closed = False
        self._log: LocalEventLog | None = None
        self._log_once = LogOnce(logging.getLogger("appevents"))

    @property
    def destination(self) -> str:
        """The log file, as the durable spool tells destinations apart (see :func:`appevents._spool.destination_of`)."""
        return f"local {self.path.absolute().resolve()}"

    def _open(self) -> LocalEventLog:
        # Opened on the exporter thread at first export: configure() and the caller's path touch no disk.
        if self._log is None:
            self._log = LocalEventLog(self.path)
        return self._log

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        """Store ``batch`` in one transaction. A log that cannot be opened or written (locked by another process
        past its busy timeout, disk full) is tried again for up to ``retry_window_s``; then the batch is returned
        unsettled (kept in the spool when there is one)."""
        rows = [(event.event_id, event.event_type, event.timestamp_ns, event.body.decode()) for event in batch]
        deadline = time.monotonic() + self.retry_window_s
        delay = 0.05
        while True:
            try:
                refused = set(self._open().append_bodies(rows))
                break
            except (OSError, sqlite3.Error, ConfigurationError) as exc:  # ConfigurationError: a file not ours
                if self._log is None:
                    reason = f"cannot open the event log at {self.path}: {type(exc).__name__}: {exc}"
                else:
                    reason = f"the event log at {self.path} refused a write: {type(exc).__name__}: {exc}"
                if self._closed or time.monotonic() + delay > deadline:
                    return ExportOutcome(retry=list(batch), retry_reason=reason)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        outcome = ExportOutcome()
        if refused:
            outcome.failed = [(event, "invalid_body") for event in batch if event.event_id in refused]
            self._log_once("invalid", logging.ERROR, "appevents: local: %d event body(ies) not stored", len(refused))
        return outcome

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """The OTel ``LogRecordExporter`` face (``opentelemetry-instrument``): records become encoded events."""
        events = [e for e in (encoded_from_record(record) for record in batch) if e is not None]
        outcome = self.export_events(events)
        ok = not (outcome.failed or outcome.dropped or outcome.retry)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._closed = True
        if self._log is not None:
            self._log.close()
            self._log = None


def create_local_exporter(settings: AppEventsSettings) -> LocalExporter:
    """``local`` entry point: the SQLite log at ``APPEVENTS_LOCAL_PATH``."""
    return LocalExporter(settings.local_path)
