"""The closed-run watcher on the real dev server: runs the server closed without worker code (terminate, execution
and run timeouts, a cron run that never started) get their ``workflow_end``, once per run in effect, with the id
worker code would use; runs worker code closed get none from the watcher."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from appevents import ApplicationEventNames, Event, EventStore, WorkflowStates
from appevents._event_store import configuration_set_aside, configure
from appevents._memory import CapturedEvents
from appevents._settings import AppEventsSettings
from appevents._sqlite_log import LocalEventLog
from appevents.temporal import AppEventsPlugin, ClosedRunWatcher, TemporalSettings
from appevents.temporal._lifecycle import workflow_end_event_id
from temporal.support import make_worker, of_workflow
from temporal.workflows import CompletingWorkflow, FailingWorkflow, LookupFailingWorkflow, WaitingWorkflow

pytestmark = pytest.mark.timeout(60)

FAST_WATCH = TemporalSettings(watch_interval_s=0.1, watch_overlap_s=5.0)


def _watching_plugin() -> AppEventsPlugin:
    return AppEventsPlugin(settings=FAST_WATCH)


def _ends(events: CapturedEvents | list[Event], workflow_id: str) -> list[Event]:
    return of_workflow(events, workflow_id, ApplicationEventNames.WORKFLOW_END)


async def _until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait for what other threads and the server do: captured events and watcher rounds signal nothing."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _closed(client: Client, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)

    async def status() -> WorkflowExecutionStatus | None:
        return (await handle.describe()).status

    async with asyncio.timeout(20):
        while await status() == WorkflowExecutionStatus.RUNNING:  # noqa: ASYNC110 - the server's state
            await asyncio.sleep(0.05)


@pytest.fixture
def local_log(tmp_path: Path) -> Iterator[tuple[CapturedEvents, Path]]:
    """Events go to the local SQLite log (which stores an event id once) and to memory (which keeps every copy)."""
    path = tmp_path / "events.db"
    with configuration_set_aside():
        capture = CapturedEvents()
        configure(AppEventsSettings(exporters=["local"], local_path=path), processors=[capture])
        try:
            yield capture, path
        finally:
            EventStore.shutdown()


async def _stored_ends(path: Path, workflow_id: str) -> list[Event]:
    assert await EventStore.flush()
    log = LocalEventLog(path)
    try:
        return [row.event() for row in log.query(workflow_id=workflow_id) if row.event().event_name == "workflow_end"]
    finally:
        log.close()


async def test_terminated_run_gets_workflow_end_terminated_with_reason_and_duration(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"terminated-{uuid.uuid4()}"
    plugin = _watching_plugin()
    async with make_worker(client, task_queue, plugins=[plugin]) as worker:
        handle = await client.start_workflow(WaitingWorkflow.run, id=workflow_id, task_queue=task_queue)
        await _until(lambda: bool(of_workflow(captured_events, workflow_id, ApplicationEventNames.WORKFLOW_START)))
        await handle.terminate(reason="stuck on a bad input")
        await _until(lambda: bool(_ends(captured_events, workflow_id)))
        # Later rounds re-read the run (it is within the overlap) and do not report it again.
        watcher = plugin.watchers[worker]
        seen = watcher.queries
        await _until(lambda: watcher.queries >= seen + 3)
    [end] = _ends(captured_events, workflow_id)
    description = await handle.describe()
    assert end.metadata.workflow_state == WorkflowStates.TERMINATED
    assert end.metadata.workflow_run_id == description.run_id
    assert end.metadata.workflow_type == "WaitingWorkflow"
    assert end.event_id == workflow_end_event_id(client.namespace, description.run_id)
    assert end.data["state"] == "terminated"
    assert end.data["reason"] == "stuck on a bad input"
    assert end.data["closed_by"] == "server"
    assert end.data["task_queue"] == task_queue
    assert description.close_time is not None and description.start_time is not None
    assert end.data["close_time"] == description.close_time.isoformat()
    expected_ms = int((description.close_time - description.start_time).total_seconds() * 1000)
    assert end.data["duration_ms"] == expected_ms


@pytest.mark.parametrize("timeout_option", ["execution_timeout", "run_timeout"])
async def test_timed_out_run_gets_workflow_end_timed_out(
    client: Client, task_queue: str, captured_events: CapturedEvents, timeout_option: str
) -> None:
    workflow_id = f"timeout-{uuid.uuid4()}"
    async with make_worker(client, task_queue, plugins=[_watching_plugin()]):
        handle = await client.start_workflow(
            WaitingWorkflow.run, id=workflow_id, task_queue=task_queue, **{timeout_option: timedelta(seconds=1)}
        )
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        await _until(lambda: bool(_ends(captured_events, workflow_id)))
    [end] = _ends(captured_events, workflow_id)
    assert end.metadata.workflow_state == WorkflowStates.TIMED_OUT
    assert end.data["state"] == "timed_out"
    assert "reason" not in end.data
    description = await handle.describe()
    assert description.close_time is not None
    # The run's duration as the server recorded it (its start time is stamped a few ms after the timer starts, so
    # a 1 s timeout can read 997 ms): the watcher reports the server's figures, not its own.
    expected_ms = int((description.close_time - description.start_time).total_seconds() * 1000)
    assert end.data["duration_ms"] == expected_ms and expected_ms >= 900
    [start] = of_workflow(captured_events, workflow_id, ApplicationEventNames.WORKFLOW_START)
    assert start.metadata.workflow_run_id == end.metadata.workflow_run_id


async def test_terminated_cron_run_that_never_started_gets_workflow_end(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"cron-{uuid.uuid4()}"
    async with make_worker(client, task_queue, plugins=[_watching_plugin()]):
        # A cron run waits for its schedule before any worker code runs; it is terminated while it waits.
        handle = await client.start_workflow(
            WaitingWorkflow.run, id=workflow_id, task_queue=task_queue, cron_schedule="0 0 1 1 *"
        )
        await handle.terminate(reason="cron retired")
        await _until(lambda: bool(_ends(captured_events, workflow_id)))
    assert of_workflow(captured_events, workflow_id, ApplicationEventNames.WORKFLOW_START) == []
    [end] = _ends(captured_events, workflow_id)
    assert end.metadata.workflow_state == WorkflowStates.TERMINATED
    assert end.data["reason"] == "cron retired"


async def test_a_run_whose_task_fails_until_terminated_gets_workflow_end_terminated(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"task-failing-{uuid.uuid4()}"
    async with make_worker(client, task_queue, plugins=[_watching_plugin()]):
        # A plain KeyError fails the workflow task, not the run: Temporal retries the task until someone steps in.
        handle = await client.start_workflow(LookupFailingWorkflow.run, id=workflow_id, task_queue=task_queue)
        await _until(lambda: bool(of_workflow(captured_events, workflow_id, ApplicationEventNames.WORKFLOW_START)))
        assert _ends(captured_events, workflow_id) == []
        await handle.terminate(reason="task keeps failing")
        await _until(lambda: bool(_ends(captured_events, workflow_id)))
    [end] = _ends(captured_events, workflow_id)
    assert end.metadata.workflow_state == WorkflowStates.TERMINATED
    assert end.data["reason"] == "task keeps failing"


async def test_runs_closed_by_worker_code_get_no_second_workflow_end(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    plugin = _watching_plugin()
    completed_id, failed_id = f"completed-{uuid.uuid4()}", f"failed-{uuid.uuid4()}"
    async with make_worker(client, task_queue, plugins=[plugin]) as worker:
        await client.execute_workflow(CompletingWorkflow.run, 0.0, id=completed_id, task_queue=task_queue)
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(FailingWorkflow.run, 0.0, id=failed_id, task_queue=task_queue)
        watcher = plugin.watchers[worker]
        seen = watcher.queries
        await _until(lambda: watcher.queries >= seen + 3)  # the watcher looked after both runs closed
    [completed] = _ends(captured_events, completed_id)
    [failed] = _ends(captured_events, failed_id)
    assert completed.metadata.workflow_state == WorkflowStates.COMPLETED
    assert failed.metadata.workflow_state == WorkflowStates.FAILED
    # The interceptor's id is the one a watcher would use for the run.
    assert completed.event_id == workflow_end_event_id(client.namespace, str(completed.metadata.workflow_run_id))


async def test_two_workers_on_one_task_queue_make_one_logical_workflow_end(
    client: Client, task_queue: str, local_log: tuple[CapturedEvents, Path]
) -> None:
    captured, path = local_log
    workflow_id = f"two-workers-{uuid.uuid4()}"
    second_client = await Client.connect(client.service_client.config.target_host)
    async with (
        make_worker(client, task_queue, plugins=[_watching_plugin()]),
        make_worker(second_client, task_queue, plugins=[_watching_plugin()]),
    ):
        handle = await client.start_workflow(WaitingWorkflow.run, id=workflow_id, task_queue=task_queue)
        await handle.terminate(reason="two workers")
        # Both watchers report the run: the same event, twice, with one id.
        await _until(lambda: len(_ends(captured, workflow_id)) == 2)
    ends = _ends(captured, workflow_id)
    assert {end.event_id for end in ends} == {workflow_end_event_id(client.namespace, str(handle.result_run_id))}
    assert [end.model_dump(exclude={"metadata"}) for end in ends[1:]] == [ends[0].model_dump(exclude={"metadata"})]
    # The local log stores the logical event once.
    [stored] = await _stored_ends(path, workflow_id)
    assert stored.event_id == ends[0].event_id
    assert stored.metadata.workflow_state == WorkflowStates.TERMINATED


async def test_a_watcher_restarted_during_the_window_misses_nothing_and_stores_nothing_twice(
    client: Client, task_queue: str, local_log: tuple[CapturedEvents, Path]
) -> None:
    captured, path = local_log
    before_id, during_id = f"before-{uuid.uuid4()}", f"during-{uuid.uuid4()}"
    first = ClosedRunWatcher(client, [task_queue], FAST_WATCH)
    before = await client.start_workflow(WaitingWorkflow.run, id=before_id, task_queue=task_queue)
    await before.terminate(reason="before the restart")
    await _closed(client, before_id)
    await _until_reported(first, before_id)
    # The watcher is down while this run is terminated; the next one, started within the window, reports it.
    during = await client.start_workflow(WaitingWorkflow.run, id=during_id, task_queue=task_queue)
    await during.terminate(reason="during the restart")
    await _closed(client, during_id)
    second = ClosedRunWatcher(client, [task_queue], FAST_WATCH)
    reported = await _until_reported(second, during_id)
    assert {str(e.metadata.workflow_id) for e in reported} == {before_id, during_id}
    assert [e.data["reason"] for e in _ends(captured, during_id)] == ["during the restart"]
    # Re-read after the restart with the same id: the local log keeps one row per run.
    assert len(await _stored_ends(path, before_id)) == 1
    assert len(await _stored_ends(path, during_id)) == 1


async def _until_reported(watcher: ClosedRunWatcher, workflow_id: str) -> list[Event]:
    """Poll until the watcher reports ``workflow_id`` (visibility is written shortly after the close)."""
    reported: list[Event] = []
    async with asyncio.timeout(20):
        while not any(e.metadata.workflow_id == workflow_id for e in reported):
            reported += await watcher.poll()
            await asyncio.sleep(0.05)
    return reported


async def test_with_a_state_file_a_restarted_watcher_resumes_at_its_watermark_and_publishes_nothing_twice(
    client: Client, task_queue: str, captured_events: CapturedEvents, tmp_path: Path
) -> None:
    settings = FAST_WATCH.model_copy(update={"watch_state_path": tmp_path / "watch.db"})
    before_id, during_id = f"before-{uuid.uuid4()}", f"during-{uuid.uuid4()}"
    first = ClosedRunWatcher(client, [task_queue], settings)
    before = await client.start_workflow(WaitingWorkflow.run, id=before_id, task_queue=task_queue)
    await before.terminate()
    await _closed(client, before_id)
    await _until_reported(first, before_id)
    first.close()  # the watcher stops
    during = await client.start_workflow(WaitingWorkflow.run, id=during_id, task_queue=task_queue)
    await during.terminate()
    await _closed(client, during_id)
    second = ClosedRunWatcher(client, [task_queue], settings)
    try:
        reported = await _until_reported(second, during_id)
        for _ in range(3):  # more rounds over the same window
            reported += await second.poll()
    finally:
        second.close()
    assert [e.metadata.workflow_id for e in reported] == [during_id]
    # Every publish, not a deduplicating store: one workflow_end per run.
    assert len(_ends(captured_events, before_id)) == 1
    assert len(_ends(captured_events, during_id)) == 1


async def test_watchers_sharing_a_state_file_publish_a_run_once(
    client: Client, task_queue: str, captured_events: CapturedEvents, tmp_path: Path
) -> None:
    settings = FAST_WATCH.model_copy(update={"watch_state_path": tmp_path / "watch.db"})
    watchers = [ClosedRunWatcher(client, [task_queue], settings) for _ in range(2)]
    workflow_id = f"shared-{uuid.uuid4()}"
    handle = await client.start_workflow(WaitingWorkflow.run, id=workflow_id, task_queue=task_queue)
    await handle.terminate()
    await _closed(client, workflow_id)
    try:
        async with asyncio.timeout(20):
            while not _ends(captured_events, workflow_id):
                for watcher in watchers:
                    await watcher.poll()
                await asyncio.sleep(0.05)
        for watcher in watchers:
            await watcher.poll()
    finally:
        for watcher in watchers:
            watcher.close()
    assert len(_ends(captured_events, workflow_id)) == 1


async def test_a_worker_restarted_during_the_window_reports_the_run_closed_while_it_was_down_once(
    client: Client, task_queue: str, captured_events: CapturedEvents, tmp_path: Path
) -> None:
    settings = FAST_WATCH.model_copy(update={"watch_state_path": tmp_path / "watch.db"})
    before_id, down_id = f"before-{uuid.uuid4()}", f"down-{uuid.uuid4()}"
    async with make_worker(client, task_queue, plugins=[AppEventsPlugin(settings=settings)]):
        before = await client.start_workflow(WaitingWorkflow.run, id=before_id, task_queue=task_queue)
        down = await client.start_workflow(WaitingWorkflow.run, id=down_id, task_queue=task_queue)
        await before.terminate()
        await _until(lambda: bool(_ends(captured_events, before_id)))
    await down.terminate()  # no worker runs
    plugin = AppEventsPlugin(settings=settings)
    async with make_worker(client, task_queue, plugins=[plugin]) as worker:
        await _until(lambda: bool(_ends(captured_events, down_id)))
        watcher = plugin.watchers[worker]
        seen = watcher.queries
        await _until(lambda: watcher.queries >= seen + 3)
    assert [e.metadata.workflow_state for e in _ends(captured_events, before_id)] == [WorkflowStates.TERMINATED]
    assert [e.metadata.workflow_state for e in _ends(captured_events, down_id)] == [WorkflowStates.TERMINATED]


async def test_bad_watcher_settings_leave_the_worker_running_without_a_watcher(
    client: Client,
    task_queue: str,
    captured_events: CapturedEvents,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("APPEVENTS_TEMPORAL_WATCH_INTERVAL_S", "soon")
    plugin = AppEventsPlugin()
    workflow_id = f"bad-settings-{uuid.uuid4()}"
    with caplog.at_level(logging.ERROR, logger="appevents.temporal"):
        async with make_worker(client, task_queue, plugins=[plugin]) as worker:
            await client.execute_workflow(CompletingWorkflow.run, 0.0, id=workflow_id, task_queue=task_queue)
            assert worker not in plugin.watchers
    [end] = _ends(captured_events, workflow_id)
    assert end.metadata.workflow_state == WorkflowStates.COMPLETED
    assert any("watch_interval_s" in r.getMessage() and "watcher is off" in r.getMessage() for r in caplog.records)
