"""SQLite statements that cross the GIL once per batch, not once per row.

CPython's ``sqlite3`` releases the GIL around every ``sqlite3_step``; getting it back waits for the thread that
holds it to reach its switch interval (5 ms) when that thread is busy — and a publishing application's threads are.
``executemany`` of 512 rows, 0.6 ms on an idle interpreter, measured 180 ms beside one busy thread. One multi-row
``INSERT`` (or one aggregated ``SELECT``) takes the GIL back a handful of times per batch instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

__all__ = ["insert_rows"]

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
