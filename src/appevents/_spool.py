"""The durable spool (``APPEVENTS_SPOOL_PATH``): an SQLite file in WAL mode that every event is appended to before
any exporter sees it.

Why SQLite: it is in the standard library, a WAL-mode commit survives the death of the process (``kill -9``) the
moment it returns, several processes (a parent and its forked workers) can append to one file at once, and
readers never block the writer. A commit is one ``fsync``-free write with ``synchronous=NORMAL``: durable
against process death, not against a power cut (``APPEVENTS_SPOOL_SYNC=full`` adds the ``fsync``).

Layout:

* ``events`` — one row per event, in append order (``seq``), tagged with the ``owner`` that appended it;
* ``owners`` — one row per pipeline that appends (a process, or a forked child: each gets a fresh owner id), with
  its pid, host, heartbeat and whether it was closed;
* ``cursors`` — per owner and exporter, the ``seq`` up to which that exporter has settled the owner's events;
* ``meta`` — the live size of the event bodies, kept in the same transactions as the rows.

An owner's rows leave the spool once every exporter's cursor is past them. An owner whose process died (or that
shut down with events left) is an orphan: the next pipeline that opens the spool, or a running one on its
periodic scan, claims it in a transaction and replays its rows to its own exporters from the orphan's cursors
(at-least-once; the event id tells a duplicate apart).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from appevents._encoded import EncodedEvent
from appevents._errors import ConfigurationError
from appevents._sqlite import claim_file, connect_wal, fork_safe, insert_rows, safe_rollback, while_locked

__all__ = ["Orphan", "Spool", "SpoolReader"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body BLOB NOT NULL,
    attributes TEXT NOT NULL,
    timestamp_ns INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    trace_flags INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_owner ON events (owner, seq);
CREATE TABLE IF NOT EXISTS owners (
    owner TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    started TEXT NOT NULL,
    host TEXT NOT NULL,
    exporters TEXT NOT NULL,
    heartbeat_ns INTEGER NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    adopted_by TEXT
);
CREATE TABLE IF NOT EXISTS cursors (
    owner TEXT NOT NULL,
    exporter TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (owner, exporter)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('bytes', 0);
"""

#: Filesystems SQLite's WAL mode cannot be shared on (its shared memory index needs one host's mmap and locks).
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "virtiofs",
        "davfs",
        "fuse.davfs2",
    }
)
#: Most rows one checkpoint deletes per owner: deleting is the writer's slowest statement, and while it runs no new
#: event is committed (a replay of 500k rows purged at once held fresh events for up to a second).
PURGE_ROWS = 8192
#: Most bytes of event bodies one read returns (besides its row limit): SQLite caps one value at 1e9 bytes.
READ_MAX_BYTES = 64 * 1024 * 1024


#: ``PRAGMA application_id`` of a spool file ("AESP"): a file without it is not taken for a spool.
SPOOL_APPLICATION_ID = 0x41455350


def _claim(db: sqlite3.Connection, path: Path) -> None:
    claim_file(
        db,
        application_id=SPOOL_APPLICATION_ID,
        schema=_SCHEMA,
        path=path,
        what="an appevents spool",
        setting="APPEVENTS_SPOOL_PATH",
    )


def _connect(path: Path, busy_timeout_s: float, sync: str, *, claim: bool = False) -> sqlite3.Connection:
    return connect_wal(
        path, busy_timeout_s, sync=sync, autocommit=True, claim=(lambda db: _claim(db, path)) if claim else None
    )


@dataclass(frozen=True)
class Orphan:
    """Another owner's leftovers, claimed by this spool: replay to ``exporters`` (the ones its owner had, each with
    the same destination here) from ``cursors`` (exporter → seq)."""

    owner: str
    cursors: Mapping[str, int]
    exporters: tuple[str, ...] = ()


def destination_of(exporter: object) -> str:
    """What tells one exporter's destination from another's in the spool: the exporter's class, and where it sends
    (its ``destination`` — a log file, a sidecar and component, a Segment source — or an OTLP exporter's
    endpoint). An orphan's rows are replayed only to an exporter with the same name and the same destination."""
    kind = f"{type(exporter).__module__}.{type(exporter).__qualname__}"
    declared = getattr(exporter, "destination", None) or getattr(exporter, "_endpoint", None)
    return f"{kind} {declared}" if isinstance(declared, str) else kind


def _parse_exporters(stored: str) -> dict[str, str]:
    """An owner's exporters as stored: a JSON object name → destination; a comma-separated list of names (from a
    version that did not record destinations: the name alone is then compared)."""
    if stored.startswith("{"):
        try:
            parsed = json.loads(stored)
        except ValueError:
            return {}
        return {str(name): str(destination) for name, destination in parsed.items()}
    return {name: "" for name in stored.split(",") if name}


class Spool:
    """The appending side of the spool, owned by one pipeline (one thread uses it: the engine's writer)."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_bytes: int,
        exporters: Mapping[str, str] | Sequence[str],
        sync: str = "normal",
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        #: name → destination (see :func:`destination_of`); names alone compare by name only.
        self.exporters: dict[str, str] = (
            dict(exporters) if isinstance(exporters, Mapping) else {name: "" for name in exporters}
        )
        self._sync = sync
        self._busy_timeout_s = busy_timeout_s
        fs = filesystem_type(self.path.parent)
        if fs in NETWORK_FILESYSTEMS:
            raise ConfigurationError(
                f"the spool at {self.path} (APPEVENTS_SPOOL_PATH) is on a network filesystem ({fs}): SQLite's WAL "
                "mode works on one host only. Put the spool on a local disk (one per host)."
            )
        self._db = _connect(self.path, busy_timeout_s, sync, claim=True)
        self.owner = uuid.uuid4().hex
        self._pid = os.getpid()
        self._host = socket.gethostname()

        @fork_safe
        def register() -> None:
            self._db.execute(
                "INSERT OR IGNORE INTO owners (owner, pid, started, host, exporters, heartbeat_ns)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self.owner,
                    self._pid,
                    _process_start(self._pid),
                    self._host,
                    json.dumps(self.exporters, sort_keys=True),
                    time.time_ns(),
                ),
            )

        try:
            while_locked(register, busy_timeout_s)
        except BaseException:
            self._db.close()
            raise

    def reader(self) -> SpoolReader:
        """A connection for one exporter thread (SQLite connections are not shared between threads here)."""
        return SpoolReader(_connect(self.path, self._busy_timeout_s, self._sync))

    # -- writer --------------------------------------------------------------------------------------------------
    @fork_safe
    def append(self, events: Sequence[EncodedEvent]) -> tuple[int, int]:
        """Append as many of ``events`` as fit under ``max_bytes`` (in order) in a transaction left open; returns
        (how many, the seq of the last one). :meth:`commit` (or :meth:`rollback`) ends it — in between, the caller
        counts them, so nobody reads a row before it is counted.

        The size check and the rows are in one ``BEGIN IMMEDIATE`` transaction, so processes sharing the spool
        never overshoot the bound together.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            (used,) = db.execute("SELECT value FROM meta WHERE key = 'bytes'").fetchone()
            room = self.max_bytes - int(used)
            taken = 0
            size = 0
            for event in events:
                if size + len(event.body) > room:
                    break
                size += len(event.body)
                taken += 1
            last_seq = 0
            if taken:
                insert_rows(
                    db,
                    "INSERT INTO events (owner, event_id, event_type, body, attributes, timestamp_ns, trace_id,"
                    " span_id, trace_flags) VALUES {rows}",
                    9,
                    [
                        (
                            self.owner,
                            e.event_id,
                            e.event_type,
                            e.body,
                            json.dumps(e.attributes, separators=(",", ":")),
                            e.timestamp_ns,
                            format(e.trace_id, "x"),
                            format(e.span_id, "x"),
                            e.trace_flags,
                        )
                        for e in events[:taken]
                    ],
                )
                db.execute("UPDATE meta SET value = value + ? WHERE key = 'bytes'", (size,))
                (last_seq,) = db.execute("SELECT last_insert_rowid()").fetchone()
        except BaseException:
            safe_rollback(db)
            raise
        return taken, int(last_seq)

    @fork_safe
    def commit(self) -> None:
        self._db.execute("COMMIT")

    @fork_safe
    def rollback(self) -> None:
        safe_rollback(self._db)

    @fork_safe
    def heartbeat(self) -> None:
        self._db.execute("UPDATE owners SET heartbeat_ns = ? WHERE owner = ?", (time.time_ns(), self.owner))

    @fork_safe
    def checkpoint(
        self,
        cursors: Mapping[str, Mapping[str, int]],
        finished: Iterable[str] = (),
        *,
        purge_limit: int | None = PURGE_ROWS,
    ) -> tuple[list[str], bool]:
        """Persist ``cursors`` (owner → exporter → seq) and drop the rows every exporter has passed — at most
        ``purge_limit`` per owner (None: all), so one checkpoint never holds the write lock for long — in one
        transaction. A ``finished`` orphan (replayed to the end) is forgotten once none of its rows is left.
        Returns (the orphans forgotten, whether a purge stopped at ``purge_limit`` with passed rows left)."""
        db = self._db
        forgotten: list[str] = []
        more = False
        db.execute("BEGIN IMMEDIATE")
        try:
            for owner, by_exporter in cursors.items():
                db.executemany(
                    "INSERT INTO cursors (owner, exporter, seq) VALUES (?, ?, ?)"
                    " ON CONFLICT (owner, exporter) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                    [(owner, exporter, seq) for exporter, seq in by_exporter.items()],
                )
                if by_exporter:
                    more = self._purge(owner, min(by_exporter.values()), purge_limit) or more
            for owner in finished:
                if db.execute("SELECT 1 FROM events WHERE owner = ? LIMIT 1", (owner,)).fetchone() is None:
                    db.execute("DELETE FROM cursors WHERE owner = ?", (owner,))
                    db.execute("DELETE FROM owners WHERE owner = ?", (owner,))
                    forgotten.append(owner)
            db.execute("COMMIT")
        except BaseException:
            safe_rollback(db)
            raise
        return forgotten, more

    def _purge(self, owner: str, up_to: int, limit: int | None) -> bool:
        """Delete ``owner``'s rows up to ``up_to`` (at most ``limit``); True if passed rows are left."""
        more = False
        if limit is not None:
            bound = self._db.execute(
                "SELECT seq FROM events WHERE owner = ? AND seq <= ? ORDER BY seq LIMIT 1 OFFSET ?",
                (owner, up_to, limit - 1),
            ).fetchone()
            if bound is not None:
                more = int(bound[0]) < up_to
                up_to = int(bound[0])
        where, params = "owner = ? AND seq <= ?", (owner, up_to)
        sql = f"SELECT COALESCE(SUM(LENGTH(body)), 0) FROM events WHERE {where}"
        (size,) = self._db.execute(sql, params).fetchone()
        if size:
            self._db.execute(f"DELETE FROM events WHERE {where}", params)
            self._db.execute("UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'bytes'", (int(size),))
        return more

    @fork_safe
    def claim_orphans(self) -> tuple[list[Orphan], list[tuple[str, str]]]:
        """Claim every owner whose process is gone (or that was closed with events left) and whose exporters are
        all configured here — the same names with the same destinations — with its cursors; its rows are then
        replayed to those exporters only. Also returns (owner, its exporters) of orphans left for a pipeline that
        has their exporters: replaying them here would settle them without those destinations."""
        if not self.exporters:
            return [], []
        rows = self._db.execute(
            "SELECT owner, pid, started, host, exporters, heartbeat_ns, closed, adopted_by FROM owners"
        ).fetchall()
        alive: dict[str, bool] = {}
        for owner, pid, started, host, _, _, closed, _ in rows:
            if owner == self.owner:
                alive[owner] = True
            elif closed:
                alive[owner] = False
            elif host == self._host:  # the process table answers; a stale heartbeat does not make it dead
                alive[owner] = _pid_alive(pid) and _process_start(pid) == started
            else:
                # Another host's process table cannot be asked, and a heartbeat compares two hosts' wall clocks (a
                # clock step makes a live owner look dead). WAL needs one host anyway (see filesystem_type):
                # such rows wait for their owner to come back on its own host.
                alive[owner] = True
        claimed: list[Orphan] = []
        left: list[tuple[str, str]] = []
        mine = self.exporters
        for owner, *_, exporters, _, _, adopted_by in rows:
            if alive[owner] or (adopted_by is not None and alive.get(adopted_by, False)):
                continue
            theirs = _parse_exporters(exporters)
            missing = [
                name
                for name, where in theirs.items()
                if name not in mine or (where and mine[name] and where != mine[name])
            ]
            if missing:
                left.append(
                    (owner, ", ".join(f"{name} ({theirs[name] or 'destination not recorded'})" for name in missing))
                )
                continue
            updated = self._db.execute(
                "UPDATE owners SET adopted_by = ? WHERE owner = ? AND adopted_by IS ?", (self.owner, owner, adopted_by)
            ).rowcount
            if updated:
                cursors = dict(self._db.execute("SELECT exporter, seq FROM cursors WHERE owner = ?", (owner,)))
                claimed.append(Orphan(owner, cursors, tuple(theirs)))
        return claimed, left

    @fork_safe
    def size(self) -> tuple[int, int]:
        """(events, body bytes) in the spool, every owner included."""
        (count,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        (used,) = self._db.execute("SELECT value FROM meta WHERE key = 'bytes'").fetchone()
        return int(count), int(used)

    @fork_safe
    def close(self) -> int:
        """Forget this owner if none of its rows is left, else mark it closed (its leftovers become an orphan for
        the next pipeline); close the connection. Returns how many of this owner's rows are left."""
        try:
            (left,) = self._db.execute("SELECT COUNT(*) FROM events WHERE owner = ?", (self.owner,)).fetchone()
            if not left:
                self._db.execute("DELETE FROM cursors WHERE owner = ?", (self.owner,))
                self._db.execute("DELETE FROM owners WHERE owner = ?", (self.owner,))
            else:
                self._db.execute("UPDATE owners SET closed = 1 WHERE owner = ?", (self.owner,))
            return int(left)
        finally:
            self._db.close()


class SpoolReader:
    """One exporter thread's read access to the spool."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    @fork_safe
    def read(self, owner: str, after_seq: int, limit: int) -> list[EncodedEvent]:
        """The next ``limit`` events of ``owner`` after ``after_seq``, in order (fewer when their bodies pass
        :data:`READ_MAX_BYTES`; always at least one).

        Fetched as one aggregated row (fields joined by U+001F, rows by U+001E — characters JSON never carries
        unescaped, nor do ids, types or hex): one step for the batch instead of one per row (see
        :mod:`appevents._sqlite`).
        """
        (packed,) = self._db.execute(
            "SELECT group_concat(seq || char(31) || event_id || char(31) || event_type || char(31) || attributes"
            " || char(31) || timestamp_ns || char(31) || trace_id || char(31) || span_id || char(31) || trace_flags"
            " || char(31) || CAST(body AS TEXT), char(30)) FROM"
            " (SELECT *, SUM(LENGTH(body)) OVER (ORDER BY seq) - LENGTH(body) AS before"
            "  FROM events WHERE owner = ? AND seq > ? ORDER BY seq LIMIT ?)"
            " WHERE before < ?",
            (owner, after_seq, limit, READ_MAX_BYTES),
        ).fetchone()
        if not packed:
            return []
        events = []
        for record in packed.split("\x1e"):
            seq, event_id, event_type, attributes, timestamp_ns, trace_id, span_id, trace_flags, body = record.split(
                "\x1f", 8
            )
            events.append(
                EncodedEvent(
                    event_id=event_id,
                    event_type=event_type,
                    body=body.encode(),
                    attributes=json.loads(attributes),
                    timestamp_ns=int(timestamp_ns),
                    trace_id=int(trace_id, 16),
                    span_id=int(span_id, 16),
                    trace_flags=int(trace_flags),
                    seq=int(seq),
                )
            )
        events.sort(key=lambda event: event.seq)  # group_concat's order is the subquery's in practice, not by law
        return events

    @fork_safe
    def save_cursor(self, owner: str, exporter: str, seq: int) -> None:
        """Persist that ``exporter`` settled ``owner``'s rows up to ``seq`` (never moves a cursor back)."""
        self._db.execute(
            "INSERT INTO cursors (owner, exporter, seq) VALUES (?, ?, ?)"
            " ON CONFLICT (owner, exporter) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            (owner, exporter, seq),
        )

    @fork_safe
    def close(self) -> None:
        self._db.close()


def filesystem_type(directory: Path, mounts: str | None = None) -> str:
    """The type of the filesystem ``directory`` is (or would be) on, from ``/proc/mounts``
    (``mounts``: that file's text); empty where it cannot be told."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return ""
    target = directory.absolute().resolve()  # symlinks of the part that exists resolved, the rest kept
    best, best_type = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = str(target) == point or str(target).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), telling a reused pid apart; empty
    where ``/proc`` does not say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # Field 22; the command name (field 2) may hold spaces and parentheses: split after its last ")".
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""
