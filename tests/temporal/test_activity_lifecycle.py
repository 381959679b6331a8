"""activity_start / activity_end per attempt, and events published inside activities."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import Client, WorkflowFailureError

from appevents import ApplicationEventNames, WorkflowStates
from appevents.testing import CapturedEvents
from temporal.support import make_worker, of_workflow
from temporal.workflows import (
    ActivityFailingWorkflow,
    CompletingWorkflow,
    HeartbeatTimeoutWorkflow,
    RetryingActivityWorkflow,
)

pytestmark = pytest.mark.timeout(60)


async def test_activity_retries_report_each_attempt_and_final_completion(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"retry-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        result = await client.execute_workflow(
            RetryingActivityWorkflow.run, args=[3, 5], id=workflow_id, task_queue=task_queue
        )
    assert result == "ok on 3"
    starts = of_workflow(captured_events, workflow_id, ApplicationEventNames.ACTIVITY_START)
    ends = of_workflow(captured_events, workflow_id, ApplicationEventNames.ACTIVITY_END)
    assert [e.metadata.attempt for e in starts] == [1, 2, 3]
    assert [e.data["attempt"] for e in ends] == [1, 2, 3]
    assert [e.data["status"] for e in ends] == ["failed", "failed", "completed"]
    assert [e.data.get("error_type") for e in ends] == ["RuntimeError", "RuntimeError", None]
    assert ends[0].data["error_message"] == "attempt 1 fails"
    for event in starts + ends:
        assert event.metadata.activity_type == "flaky"
        assert event.metadata.workflow_type == "RetryingActivityWorkflow"
        assert event.metadata.workflow_state == WorkflowStates.RUNNING
    assert all(isinstance(e.data["duration_ms"], int) and e.data["duration_ms"] >= 0 for e in ends)
    # Every attempt is a distinct step with its own stable id.
    assert len({e.event_id for e in starts + ends}) == 6


async def test_exhausted_activity_retries_end_failed_and_fail_the_workflow(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"exhaust-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(ActivityFailingWorkflow.run, id=workflow_id, task_queue=task_queue)
    ends = of_workflow(captured_events, workflow_id, ApplicationEventNames.ACTIVITY_END)
    assert [(e.data["attempt"], e.data["status"]) for e in ends] == [(1, "failed"), (2, "failed")]
    [workflow_end] = of_workflow(captured_events, workflow_id, ApplicationEventNames.WORKFLOW_END)
    assert workflow_end.metadata.workflow_state == WorkflowStates.FAILED
    assert workflow_end.data["error_type"] == "ActivityError"


async def test_events_published_in_activities_carry_activity_and_parent_workflow(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"act-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        handle = await client.start_workflow(CompletingWorkflow.run, 0.0, id=workflow_id, task_queue=task_queue)
        await handle.result()
    [event] = captured_events.of_type("data.batch_processed")
    meta = event.metadata
    assert event.data == {"batch_id": "b-1"}
    assert (meta.activity_type, meta.attempt) == ("process_batch", 1)
    assert meta.activity_id is not None
    assert (meta.workflow_type, meta.workflow_id, meta.workflow_run_id) == (
        "CompletingWorkflow",
        workflow_id,
        handle.result_run_id,
    )
    [activity_start] = of_workflow(captured_events, workflow_id, ApplicationEventNames.ACTIVITY_START)
    assert activity_start.metadata.activity_id == meta.activity_id


async def test_activity_attempt_past_its_heartbeat_timeout_ends_timed_out(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"heartbeat-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(HeartbeatTimeoutWorkflow.run, id=workflow_id, task_queue=task_queue)
        # The server fails the run at the timeout; the worker cancels the attempt on its own heartbeat timer.
        # Wait for that here: a worker stopped first would cancel the attempt for its shutdown instead.
        while not of_workflow(captured_events, workflow_id, ApplicationEventNames.ACTIVITY_END):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    [end] = of_workflow(captured_events, workflow_id, ApplicationEventNames.ACTIVITY_END)
    assert end.data["status"] == "timed_out"
    assert "timed_out" in end.data["cancellation_reasons"]  # type: ignore[operator]
    assert end.data["error_type"] == "CancelledError"
