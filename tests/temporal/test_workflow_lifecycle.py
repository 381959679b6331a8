"""workflow_start / workflow_end: the true terminal state and the run's duration in workflow time.

Run on the time-skipping server: each workflow first sleeps five minutes of workflow time, so the reported
duration is known without reading a clock. Runs ended by a signal handler run on the dev server.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from appevents import ApplicationEventNames, Event, WorkflowStates
from appevents.testing import CapturedEvents
from temporal.support import make_worker, of_workflow
from temporal.workflows import (
    CompletingWorkflow,
    ContinuingWorkflow,
    FailingWorkflow,
    HandlerEndedWorkflow,
    LookupFailingWorkflow,
    WaitingWorkflow,
)

pytestmark = pytest.mark.timeout(60)

FIVE_MINUTES_MS = 5 * 60 * 1000


def _ends(captured: CapturedEvents, workflow_id: str) -> list[Event]:
    return of_workflow(captured, workflow_id, ApplicationEventNames.WORKFLOW_END)


def _starts(captured: CapturedEvents, workflow_id: str) -> list[Event]:
    return of_workflow(captured, workflow_id, ApplicationEventNames.WORKFLOW_START)


async def test_workflow_end_reports_completed_with_duration(
    time_skipping_env: WorkflowEnvironment, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"ok-{uuid.uuid4()}"
    async with make_worker(time_skipping_env.client, task_queue):
        handle = await time_skipping_env.client.start_workflow(
            CompletingWorkflow.run, 300.0, id=workflow_id, task_queue=task_queue
        )
        assert await handle.result() == "done"
    [start] = _starts(captured_events, workflow_id)
    [end] = _ends(captured_events, workflow_id)
    assert start.metadata.workflow_state == WorkflowStates.RUNNING
    assert start.metadata.workflow_run_id == end.metadata.workflow_run_id == handle.result_run_id
    assert start.metadata.workflow_type == "CompletingWorkflow"
    assert end.metadata.workflow_state == WorkflowStates.COMPLETED
    assert end.data["state"] == "completed"
    assert isinstance(end.data["duration_ms"], int)
    assert FIVE_MINUTES_MS <= end.data["duration_ms"] < 2 * FIVE_MINUTES_MS
    assert "error_type" not in end.data


async def test_workflow_end_reports_failed_with_error_type(
    time_skipping_env: WorkflowEnvironment, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"fail-{uuid.uuid4()}"
    async with make_worker(time_skipping_env.client, task_queue):
        with pytest.raises(WorkflowFailureError):
            await time_skipping_env.client.execute_workflow(
                FailingWorkflow.run, 300.0, id=workflow_id, task_queue=task_queue
            )
    [end] = _ends(captured_events, workflow_id)
    assert end.metadata.workflow_state == WorkflowStates.FAILED
    assert end.data["error_type"] == "ApplicationError"
    assert end.data["error_message"] == "input rejected"
    assert end.data["application_error_type"] == "BadInput"
    assert FIVE_MINUTES_MS <= end.data["duration_ms"] < 2 * FIVE_MINUTES_MS  # type: ignore[operator]


async def test_workflow_end_reports_cancelled_state(
    time_skipping_env: WorkflowEnvironment, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"cancel-{uuid.uuid4()}"
    async with make_worker(time_skipping_env.client, task_queue):
        handle = await time_skipping_env.client.start_workflow(
            WaitingWorkflow.run, id=workflow_id, task_queue=task_queue
        )
        await time_skipping_env.sleep(timedelta(minutes=5))
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    [end] = _ends(captured_events, workflow_id)
    assert end.metadata.workflow_state == WorkflowStates.CANCELLED
    assert end.data["state"] == "cancelled"
    assert end.data["error_type"] == "CancelledError"
    # Cancelled after five minutes of a one-day sleep.
    assert FIVE_MINUTES_MS <= end.data["duration_ms"] < 24 * 60 * 60 * 1000  # type: ignore[operator]


async def test_workflow_end_reports_continued_as_new_per_run(
    time_skipping_env: WorkflowEnvironment, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"can-{uuid.uuid4()}"
    async with make_worker(time_skipping_env.client, task_queue):
        result = await time_skipping_env.client.execute_workflow(
            ContinuingWorkflow.run, args=[2, 300.0], id=workflow_id, task_queue=task_queue
        )
    assert result == 0
    starts = _starts(captured_events, workflow_id)
    ends = _ends(captured_events, workflow_id)
    assert [e.metadata.workflow_state for e in ends] == [
        WorkflowStates.CONTINUED_AS_NEW,
        WorkflowStates.CONTINUED_AS_NEW,
        WorkflowStates.COMPLETED,
    ]
    # One start and one end per run, paired by run id; each run continues from the previous one.
    assert [s.metadata.workflow_run_id for s in starts] == [e.metadata.workflow_run_id for e in ends]
    assert len({s.metadata.workflow_run_id for s in starts}) == 3
    assert [s.data.get("continued_from_run_id") for s in starts[1:]] == [
        s.metadata.workflow_run_id for s in starts[:-1]
    ]
    for end in ends:
        assert FIVE_MINUTES_MS <= end.data["duration_ms"] < 2 * FIVE_MINUTES_MS  # type: ignore[operator]
        assert "error_type" not in end.data


async def test_configured_failure_exception_types_end_the_run_as_failed(
    time_skipping_env: WorkflowEnvironment, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"lookup-{uuid.uuid4()}"
    async with make_worker(time_skipping_env.client, task_queue, workflow_failure_exception_types=[KeyError]):
        with pytest.raises(WorkflowFailureError):
            await time_skipping_env.client.execute_workflow(
                LookupFailingWorkflow.run, id=workflow_id, task_queue=task_queue
            )
    [end] = _ends(captured_events, workflow_id)
    assert end.metadata.workflow_state == WorkflowStates.FAILED
    assert end.data["error_type"] == "KeyError"


async def test_signal_handler_failing_the_run_reports_failed_once(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"signal-fail-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        handle = await client.start_workflow(HandlerEndedWorkflow.run, False, id=workflow_id, task_queue=task_queue)
        await handle.signal(HandlerEndedWorkflow.reject, "order cancelled by the shop")
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    [end] = _ends(captured_events, workflow_id)
    assert end.metadata.workflow_state == WorkflowStates.FAILED
    assert end.metadata.workflow_run_id == handle.result_run_id
    assert end.data["error_type"] == "ApplicationError"
    assert end.data["application_error_type"] == "Rejected"
    assert end.data["error_message"] == "order cancelled by the shop"


async def test_signal_handler_continuing_as_new_reports_continued_as_new(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"signal-can-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        handle = await client.start_workflow(HandlerEndedWorkflow.run, False, id=workflow_id, task_queue=task_queue)
        await handle.signal(HandlerEndedWorkflow.restart)
        assert await client.get_workflow_handle(workflow_id).result() == "restarted"
    starts = _starts(captured_events, workflow_id)
    ends = _ends(captured_events, workflow_id)
    assert [e.metadata.workflow_state for e in ends] == [WorkflowStates.CONTINUED_AS_NEW, WorkflowStates.COMPLETED]
    assert [e.metadata.workflow_run_id for e in ends] == [s.metadata.workflow_run_id for s in starts]
    assert ends[0].metadata.workflow_run_id == handle.first_execution_run_id


async def test_failed_update_does_not_end_the_run(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"update-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        handle = await client.start_workflow(HandlerEndedWorkflow.run, False, id=workflow_id, task_queue=task_queue)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(HandlerEndedWorkflow.check, -1)
        assert _ends(captured_events, workflow_id) == []
        await handle.signal(HandlerEndedWorkflow.finish)
        assert await handle.result() == "finished"
    [end] = _ends(captured_events, workflow_id)
    assert end.metadata.workflow_state == WorkflowStates.COMPLETED
