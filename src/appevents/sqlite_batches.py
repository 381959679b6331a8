"""SQLite the way appevents uses it from several threads and processes: statements that cross the GIL once per
batch, not once per row, and opening a shared WAL file without tripping over another process's lock.

CPython's ``sqlite3`` releases the GIL around every ``sqlite3_step``; getting it back waits for the thread that
holds it to reach its switch interval (5 ms) when that thread is busy — and a publishing application's threads are.
``executemany`` of 512 rows, 0.6 ms on an idle interpreter, measured 180 ms beside one busy thread. One multi-row
``INSERT`` (or one aggregated ``SELECT``) takes the GIL back a handful of times per batch instead.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["connect_wal", "insert_rows", "while_locked"]

T = TypeVar("T")

#: Rows per statement, whatever the column count: large enough to amortise, small enough for every SQLite build.
_MAX_ROWS = 4096


def insert_rows(db: sqlite3.Connection, statement: str, width: int, rows: Sequence[Sequence[object]]) -> None:
    """Run ``statement`` — whose ``{rows}`` stands for ``(?, ...), (?, ...)`` tuples of ``width`` values — for
    ``rows``, with as few statements as the connection's variable limit allows. The caller owns the transaction."""
    limit = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    step = max(1, min(_MAX_ROWS, limit))
    placeholders = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        sql = statement.format(rows=", ".join([placeholders] * len(chunk)))
        db.execute(sql, [value for row in chunk for value in row])


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


def connect_wal(
    path: Path, busy_timeout_s: float, *, sync: str = "normal", autocommit: bool = False
) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode (switched only by whoever finds it not in WAL yet), usable from any
    thread (the caller serialises its use)."""

    def connect() -> sqlite3.Connection:
        db = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None if autocommit else "DEFERRED", check_same_thread=False
        )
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        except BaseException:
            db.close()
            raise
        return db

    return while_locked(connect, busy_timeout_s)
