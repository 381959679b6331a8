"""Multi-row inserts: every row stored once, in order, with a bounded set of distinct statements.

The connection keeps up to 128 prepared statements; a statement per batch length filled that cache with
multi-row inserts of up to ~1 MiB each (a local log under a fast publisher grew by 120 MiB of RSS).
"""

from __future__ import annotations

import sqlite3

import pytest

from appevents._sqlite import insert_rows

pytestmark = pytest.mark.timeout(60)


def test_every_row_is_inserted_once_in_order_whatever_the_batch_length() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a INTEGER, b TEXT)")
    rows_per_statement: set[int] = set()  # one template: a distinct row count is a distinct statement
    db.set_trace_callback(lambda sql: rows_per_statement.add(sql.count("),") + 1) if sql.startswith("INSERT") else None)
    total = 0
    for length in range(0, 1300):
        rows = [(total + i, f"r{total + i}") for i in range(length)]
        insert_rows(db, "INSERT INTO t (a, b) VALUES {rows}", 2, rows)
        total += length
    stored = db.execute("SELECT a, b FROM t ORDER BY rowid").fetchall()
    assert stored == [(i, f"r{i}") for i in range(total)]
    # Lengths 1..1299 need the powers of two up to 1024: 11 distinct statements, not 1299.
    assert rows_per_statement == {2**k for k in range(11)}


def test_a_batch_larger_than_the_variable_limit_is_split() -> None:
    db = sqlite3.connect(":memory:")
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 30)  # 10 rows of 3 values per statement at most
    db.execute("CREATE TABLE t (a INTEGER, b INTEGER, c INTEGER)")
    rows = [(i, i, i) for i in range(95)]
    insert_rows(db, "INSERT INTO t (a, b, c) VALUES {rows}", 3, rows)
    assert db.execute("SELECT a FROM t ORDER BY rowid").fetchall() == [(i,) for i in range(95)]
