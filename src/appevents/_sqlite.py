"""SQLite the way appevents uses it from several threads and processes: statements that cross the GIL once per
batch, not once per row, and opening a shared WAL file without tripping over another process's lock.

CPython's ``sqlite3`` releases the GIL around every ``sqlite3_step``; getting it back waits for the thread that
holds it to reach its switch interval (5 ms) when that thread is busy — and a publishing application's threads are.
``executemany`` of 512 rows, 0.6 ms on an idle interpreter, measured 180 ms beside one busy thread. One multi-row
``INSERT`` (or one aggregated ``SELECT``) takes the GIL back a handful of times per batch instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

from appevents._errors import ConfigurationError

__all__ = ["claim_file", "connect_wal", "fork_safe", "insert_rows", "make_private", "safe_rollback", "while_locked"]

T = TypeVar("T")
P = ParamSpec("P")

#: How long a fork waits for our threads to leave SQLite.
_FORK_WAITS_S = 5.0


class _ForkGate:
    """Keeps ``os.fork()`` from happening while one of our threads is inside SQLite.

    SQLite's own mutexes (its allocator's, its file locks' table) are held by whichever thread is inside it; a
    child forked at that moment inherits them held by a thread it does not have, and its first SQLite call
    hangs. Our SQLite calls enter this gate (shared, cheap); a fork closes it, waits for them to leave (bounded),
    and opens it again in both processes.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._forking = False

    def enter(self) -> None:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._inside += 1

    def leave(self) -> None:
        with self._cond:
            self._inside -= 1
            if not self._inside:
                self._cond.notify_all()

    def before_fork(self) -> None:
        deadline = time.monotonic() + _FORK_WAITS_S
        with self._cond:
            self._forking = True
            while self._inside and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # the parent's threads are not here: a fresh, open gate


_GATE = _ForkGate()
os.register_at_fork(
    before=_GATE.before_fork, after_in_parent=_GATE.after_fork_in_parent, after_in_child=_GATE.after_fork_in_child
)


def fork_safe(method: Callable[P, T]) -> Callable[P, T]:
    """Run ``method`` (which calls SQLite) inside the fork gate (see :class:`_ForkGate`)."""

    @functools.wraps(method)
    def gated(*args: P.args, **kwargs: P.kwargs) -> T:
        _GATE.enter()
        try:
            return method(*args, **kwargs)
        finally:
            _GATE.leave()

    return gated


#: Rows per statement, whatever the column count: large enough to amortise, small enough for every SQLite build.
_MAX_ROWS = 4096


def insert_rows(db: sqlite3.Connection, statement: str, width: int, rows: Sequence[Sequence[object]]) -> None:
    """Run ``statement`` — whose ``{rows}`` stands for ``(?, ...), (?, ...)`` tuples of ``width`` values — for
    ``rows``, with as few statements as the connection's variable limit allows. The caller owns the transaction."""
    limit = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    step = max(1, min(_MAX_ROWS, limit))
    placeholders = "(" + ", ".join("?" * width) + ")"
    start = 0
    while start < len(rows):
        # Chunks of `step` rows, then powers of two: a handful of distinct statements, which the connection's
        # statement cache keeps prepared. One statement per batch length would fill that cache with up to 128
        # multi-row statements of ~1 MiB each (120 MiB of RSS seen under a publisher outrunning the local log).
        size = min(step, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start : start + size]
        db.execute(statement.format(rows=", ".join([placeholders] * size)), [value for row in chunk for value in row])
        start += size


def while_locked(attempt: Callable[[], T], timeout_s: float) -> T:
    """``attempt()``, tried again while SQLite answers "database is locked" or "busy", for up to ``timeout_s``.

    SQLite's busy timeout does not cover every case: switching a file to WAL, and a reader that must become a
    writer while another process writes, fail at once. Processes opening one file together (a parent and its
    forked workers) meet exactly those.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def make_private(path: Path) -> None:
    """Create ``path``'s missing parent directories (0700) and the file itself (0600), whatever the umask.

    SQLite creates a database's ``-wal`` and ``-shm`` files with the database file's own permissions, so a
    private database file keeps its journal private too. An existing file keeps the mode its owner gave it.
    """
    missing = [parent for parent in reversed(path.parents) if not parent.exists()]
    for directory in missing:
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            directory.mkdir(mode=0o700)
            os.chmod(directory, 0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _columns(db: sqlite3.Connection) -> dict[str, set[str]]:
    tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {table: {row[1] for row in db.execute(f'PRAGMA table_info("{table}")')} for table in tables}


def _schema_statements(schema: str) -> list[str]:
    return [statement.strip() for statement in schema.split(";") if statement.strip()]


def claim_file(
    db: sqlite3.Connection, *, application_id: int, schema: str, path: Path, what: str, setting: str
) -> None:
    """Make sure the database behind ``db`` is ours before anything is written to it, then create ``schema`` and
    mark the file (``PRAGMA application_id``) in one transaction.

    Ours: marked with ``application_id``; or empty; or unmarked with exactly our tables (written by a version that
    did not mark its files yet). Anything else raises :class:`~appevents.ConfigurationError` naming ``path`` and
    leaves the file as it was — no table added, no journal mode switched (call this before :func:`connect_wal`'s
    switch to WAL; this function does not switch it).
    """
    expected_db = sqlite3.connect(":memory:")
    try:
        for statement in _schema_statements(schema):
            expected_db.execute(statement)
        expected = _columns(expected_db)
    finally:
        expected_db.close()

    def refuse(reason: str) -> ConfigurationError:
        return ConfigurationError(
            f"{path} ({setting}) is not {what}: {reason}; it was left unchanged. Point {setting} at a new file "
            "or at one appevents created."
        )

    def check() -> bool:
        """True if the schema must be created (or completed) and the file marked."""
        (marked,) = db.execute("PRAGMA application_id").fetchone()
        if marked == application_id:
            return False
        if marked != 0:
            raise refuse(f"its application_id is {marked:#x}, not appevents' {application_id:#x}")
        present = {t: c for t, c in _columns(db).items() if t != "sqlite_sequence"}
        for table, columns in present.items():
            if expected.get(table) != columns:
                raise refuse(f"it holds a table {table!r} that is not one of appevents'")
        return True

    def attempt() -> None:  # runs inside connect_wal's fork gate
        if not check():
            return
        autocommit = db.isolation_level is None
        if not autocommit:
            db.commit()
        db.execute("BEGIN IMMEDIATE")
        try:
            if check():  # again, under the write lock: another process may have claimed it meanwhile
                for statement in _schema_statements(schema):
                    db.execute(statement)
                db.execute(f"PRAGMA application_id = {int(application_id)}")
            db.execute("COMMIT")
        except BaseException:
            safe_rollback(db)
            raise

    try:
        while_locked(attempt, max(_busy_timeout_s(db), 1.0))
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise refuse(f"{type(exc).__name__}: {exc}") from exc
        raise


def _busy_timeout_s(db: sqlite3.Connection) -> float:
    """The connection's busy timeout in seconds."""
    (ms,) = db.execute("PRAGMA busy_timeout").fetchone()
    return float(ms) / 1000


def safe_rollback(db: sqlite3.Connection) -> None:
    """End the open transaction, if any. SQLite rolls a transaction back by itself when a statement fails for a
    full disk or an I/O error (``COMMIT`` included); a ``ROLLBACK`` then raises "no transaction is active"."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def connect_wal(
    path: Path,
    busy_timeout_s: float,
    *,
    sync: str = "normal",
    autocommit: bool = False,
    claim: Callable[[sqlite3.Connection], None] | None = None,
) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode (switched only by whoever finds it not in WAL yet), usable from any
    thread (the caller serialises its use). A new file is created private (see :func:`make_private`); ``claim``
    (e.g. :func:`claim_file`) runs before the switch to WAL and may refuse the file."""

    @fork_safe
    def connect() -> sqlite3.Connection:
        db = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None if autocommit else "DEFERRED", check_same_thread=False
        )
        try:
            if claim is not None:
                claim(db)
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        except BaseException:
            db.close()
            raise
        return db

    make_private(path)
    return while_locked(connect, busy_timeout_s)
