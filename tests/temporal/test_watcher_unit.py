"""The closed-run watcher's pure parts (query, watermark, event) and how it behaves when the server refuses."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from appevents import ApplicationEventNames, ConfigurationError, WorkflowStates
from appevents.temporal import ClosedRunWatcher, TemporalSettings
from appevents.temporal._lifecycle import (
    ClosedRun,
    WorkflowRef,
    closed_run_end_event,
    workflow_end_event,
    workflow_end_event_id,
)
from appevents.temporal._watch_state import WatchState
from appevents.temporal._watcher import MAX_BACKOFF_S, Watermark, closed_runs_query

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)
RUN = ClosedRun(
    namespace="default",
    task_queue="orders",
    workflow_type="Orders",
    workflow_id="wf-1",
    run_id="run-1",
    state=WorkflowStates.TERMINATED,
    start_time=T0,
    close_time=T0 + timedelta(seconds=90, milliseconds=250),
    reason="operator",
)


def test_closed_runs_query_filters_queue_status_and_close_time() -> None:
    query = closed_runs_query("orders", T0)
    assert query == (
        "TaskQueue = 'orders' AND ExecutionStatus IN ('Terminated', 'TimedOut')"
        " AND CloseTime >= '2026-12-05T20:00:00+00:00'"
    )


def test_closed_runs_query_escapes_quotes_in_queue_names() -> None:
    assert closed_runs_query("it's\\q", T0).startswith("TaskQueue = 'it\\'s\\\\q' AND")


def test_watermark_starts_the_query_overlap_before_the_newest_close_time() -> None:
    mark = Watermark(T0, timedelta(seconds=60))
    assert mark.since() == T0 - timedelta(seconds=60)
    mark.record("a", T0 + timedelta(minutes=5))
    assert mark.since() == T0 + timedelta(minutes=4)
    # An older close time (a late visibility record) never moves the watermark back.
    mark.record("b", T0 + timedelta(minutes=4, seconds=30))
    assert mark.since() == T0 + timedelta(minutes=4)


def test_watermark_reports_a_run_once_and_forgets_runs_out_of_the_window() -> None:
    mark = Watermark(T0, timedelta(seconds=60))
    mark.record("a", T0 + timedelta(seconds=10))
    assert not mark.is_new("a")
    assert mark.is_new("b")
    mark.record("b", T0 + timedelta(minutes=10))
    # "a" closed long before the window the next query reads: it is forgotten, memory stays one window's runs.
    assert len(mark) == 1
    assert not mark.is_new("b")


def test_closed_run_end_event_carries_state_duration_close_time_and_reason() -> None:
    event = closed_run_end_event(RUN)
    assert event.event_name == ApplicationEventNames.WORKFLOW_END
    assert event.metadata.workflow_state == WorkflowStates.TERMINATED
    assert event.metadata.workflow_id == "wf-1" and event.metadata.workflow_run_id == "run-1"
    assert event.metadata.created_timestamp == int(RUN.close_time.timestamp())
    assert event.data["duration_ms"] == 90_250
    assert event.data["close_time"] == "2026-12-05T20:01:30.250000+00:00"
    assert event.data["reason"] == "operator"
    assert event.data["closed_by"] == "server"


def test_a_runs_workflow_end_has_one_id_whoever_reports_it() -> None:
    ref = WorkflowRef(workflow_type="Orders", workflow_id="wf-1", run_id="run-1", namespace="default", task_queue="q")
    by_worker = workflow_end_event(ref, WorkflowStates.COMPLETED, 5)
    by_watcher = closed_run_end_event(RUN)
    assert by_worker.event_id == by_watcher.event_id == workflow_end_event_id("default", "run-1")
    assert workflow_end_event_id("other", "run-1") != by_watcher.event_id
    assert workflow_end_event_id("default", "run-2") != by_watcher.event_id


class _RefusingClient:
    """Stands in for a Client whose server answers every visibility query with ``errors`` (then nothing)."""

    def __init__(self, *errors: RPCError, namespace: str = "default") -> None:
        self.namespace = namespace
        self.errors = list(errors)
        self.queries: list[str] = []

    def list_workflows(self, query: str) -> AsyncIterator[Any]:
        self.queries.append(query)
        error = self.errors.pop(0) if self.errors else None

        async def executions() -> AsyncIterator[Any]:
            if error is not None:
                raise error
            for _ in ():
                yield _

        return executions()


def _rpc_error(status: RPCStatusCode, message: str) -> RPCError:
    return RPCError(message, status, b"")


def _watcher(client: _RefusingClient, queues: list[str]) -> ClosedRunWatcher:
    return ClosedRunWatcher(cast(Client, client), queues, TemporalSettings(watch_interval_s=0.5))


async def test_a_server_without_the_visibility_features_gets_one_warning_and_no_retry_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    namespace = f"ns-{uuid.uuid4()}"
    refusal = _rpc_error(RPCStatusCode.INVALID_ARGUMENT, "invalid query: operation is not supported")
    clients = [_RefusingClient(refusal, namespace=namespace) for _ in range(3)]  # three workers, one process
    with caplog.at_level(logging.WARNING, logger="appevents.temporal"):
        for client in clients:
            await asyncio.wait_for(_watcher(client, ["orders"]).run(), timeout=5)
    assert [len(client.queries) for client in clients] == [1, 1, 1]
    [warning] = [r for r in caplog.records if r.name == "appevents.temporal"]
    assert "advanced visibility" in warning.getMessage()
    assert "APPEVENTS_TEMPORAL_WATCH=false" in warning.getMessage()


async def test_failed_queries_back_off_and_are_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    unavailable = [_rpc_error(RPCStatusCode.UNAVAILABLE, "connection refused") for _ in range(12)]
    client = _RefusingClient(*unavailable)
    watcher = _watcher(client, ["orders"])
    delays: list[float] = []

    async def recorded_sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 14:
            raise asyncio.CancelledError

    monkeypatch.setattr("appevents.temporal._watcher.asyncio.sleep", recorded_sleep)
    with caplog.at_level(logging.INFO, logger="appevents.temporal"), pytest.raises(asyncio.CancelledError):
        await watcher.run()
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == MAX_BACKOFF_S
    # The thirteenth query succeeds: back to the interval.
    assert delays[12:] == [0.5, 0.5]
    messages = [r.getMessage() for r in caplog.records if r.name == "appevents.temporal"]
    assert len([m for m in messages if "connection refused" in m]) == 1
    assert any("reaches the server again" in m for m in messages)


async def test_one_query_per_task_queue_per_poll() -> None:
    client = _RefusingClient()
    watcher = _watcher(client, ["a", "b", "a"])
    await watcher.poll()
    await watcher.poll()
    assert [q.split(" AND ")[0] for q in client.queries] == ["TaskQueue = 'a'", "TaskQueue = 'b'"] * 2
    assert watcher.queries == 4


def test_the_watch_state_keeps_claims_per_run_and_forgets_runs_out_of_the_window(tmp_path: Path) -> None:
    path = tmp_path / "state" / "watch.db"
    state = WatchState(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert state.claim("default", "orders", "run-1", T0)
        assert not state.claim("default", "orders", "run-1", T0), "claimed already"
        assert state.claim("other", "orders", "run-1", T0), "another namespace"
        assert state.claim("default", "orders", "run-2", T0 + timedelta(minutes=5))
        assert state.load("default", "orders") == {"run-1": T0, "run-2": T0 + timedelta(minutes=5)}
        state.forget_before("default", "orders", T0 + timedelta(minutes=1))
        assert state.load("default", "orders") == {"run-2": T0 + timedelta(minutes=5)}
        assert state.load("other", "orders") == {"run-1": T0}
    finally:
        state.close()
    reopened = WatchState(path)
    try:
        assert reopened.load("default", "orders") == {"run-2": T0 + timedelta(minutes=5)}
    finally:
        reopened.close()


def test_the_watch_state_refuses_a_file_that_is_not_its_own(tmp_path: Path) -> None:
    path = tmp_path / "someone-elses.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER)")
    db.close()
    before = path.read_bytes()
    with pytest.raises(ConfigurationError, match="not an appevents watch state file"):
        WatchState(path)
    assert path.read_bytes() == before, "left exactly as it was (no table, no journal mode switched)"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("orders",)]
    db.close()


async def test_a_watcher_whose_state_file_cannot_be_used_warns_once_and_watches_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "someone-elses.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER)")
    db.close()
    client = _RefusingClient()
    watcher = ClosedRunWatcher(
        cast(Client, client), ["orders"], TemporalSettings(watch_interval_s=0.5, watch_state_path=path)
    )
    with caplog.at_level(logging.WARNING, logger="appevents"):
        await watcher.poll()
        await watcher.poll()
    assert len(client.queries) == 2
    [record] = [r for r in caplog.records if "watch state" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "keeps it in memory" in record.getMessage()
