"""Replaying recorded histories with the plugin emits no events and finds no nondeterminism."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer

from appevents.temporal import AppEventsPlugin
from appevents.testing import CapturedEvents
from temporal.support import make_worker
from temporal.workflows import (
    ALL_WORKFLOWS,
    CompletingWorkflow,
    ContinuingWorkflow,
    CrashingOnceWorkflow,
    FailingWorkflow,
    PublishingWorkflow,
    RetryingActivityWorkflow,
    WaitingWorkflow,
)

pytestmark = pytest.mark.timeout(90)


async def _run_everything(client: Client, task_queue: str) -> list[WorkflowHandle[Any, Any]]:
    """One run of each kind of outcome; returns handles to every closed run."""
    handles: list[WorkflowHandle[Any, Any]] = []

    async def run(workflow: Any, *args: Any, expect_failure: bool = False) -> WorkflowHandle[Any, Any]:
        handle = await client.start_workflow(
            workflow, args=list(args), id=f"replay-{uuid.uuid4()}", task_queue=task_queue
        )
        if expect_failure:
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        else:
            await handle.result()
        handles.append(handle)
        return handle

    await run(CompletingWorkflow.run, 0.0)
    await run(FailingWorkflow.run, 0.0, expect_failure=True)
    await run(RetryingActivityWorkflow.run, 2, 3)
    await run(PublishingWorkflow.run, False)
    await run(CrashingOnceWorkflow.run)
    continued = await run(ContinuingWorkflow.run, 1, 0.0)
    first_run = client.get_workflow_handle(continued.id, run_id=continued.first_execution_run_id)
    handles.append(first_run)
    waiting = await client.start_workflow(WaitingWorkflow.run, id=f"replay-{uuid.uuid4()}", task_queue=task_queue)
    await waiting.cancel()
    with pytest.raises(WorkflowFailureError):
        await waiting.result()
    handles.append(waiting)
    return handles


async def _iterate(histories: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    # temporalio 1.35 with a plugin on the Replayer iterates the histories with `async for`.
    for history in histories:
        yield history


@pytest.mark.parametrize("recorded_with_plugin", [True, False], ids=["recorded-with", "recorded-without"])
async def test_replay_with_plugin_emits_zero_events(
    client: Client, task_queue: str, captured_events: CapturedEvents, recorded_with_plugin: bool
) -> None:
    async with make_worker(client, task_queue, plugins=None if recorded_with_plugin else []):
        handles = await _run_everything(client, task_queue)
    histories: list[WorkflowHistory] = [await h.fetch_history() for h in handles]
    assert len(histories) == 8
    published_live = len(captured_events)
    assert published_live > 0
    captured_events.clear()

    replayer = Replayer(workflows=ALL_WORKFLOWS, plugins=[AppEventsPlugin()])
    results = await replayer.replay_workflows(_iterate(histories), raise_on_replay_failure=False)

    assert [r.replay_failure for r in results.replay_failures.values()] == []
    assert len(captured_events) == 0
