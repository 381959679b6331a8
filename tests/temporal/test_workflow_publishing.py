"""Publishing from workflow code: no history events, deterministic ids, nothing re-emitted on replay."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import Client

from appevents import ApplicationEventNames, WorkflowStates
from appevents.testing import CapturedEvents
from temporal.support import history_event_types, make_worker, of_workflow
from temporal.workflows import CrashingOnceWorkflow, PublishingWorkflow

pytestmark = pytest.mark.timeout(60)


async def test_workflow_events_carry_workflow_metadata_and_the_ids_built_in_the_workflow(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"pub-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        handle = await client.start_workflow(PublishingWorkflow.run, False, id=workflow_id, task_queue=task_queue)
        ids = await handle.result()
    published = [e for e in of_workflow(captured_events, workflow_id) if e.event_type.startswith("order.")]
    assert [e.event_type for e in published] == ["order.started", "order.validated", "order.completed"]
    assert [e.event_id for e in published] == ids
    description = await handle.describe()
    for event in published:
        meta = event.metadata
        assert (meta.workflow_type, meta.workflow_id, meta.workflow_run_id) == (
            "PublishingWorkflow",
            workflow_id,
            handle.result_run_id,
        )
        assert meta.workflow_state == WorkflowStates.RUNNING
        assert meta.activity_type is None
        # Workflow time: not before the run started, not after it closed.
        assert meta.created_timestamp is not None and description.close_time is not None
        assert int(description.start_time.timestamp()) <= meta.created_timestamp
        assert meta.created_timestamp <= description.close_time.timestamp()


async def test_history_is_the_same_with_and_without_the_plugin(client: Client, captured_events: CapturedEvents) -> None:
    histories: dict[str, list[str]] = {}
    for label, plugins in (("without", []), ("with", None)):
        task_queue = f"tq-{uuid.uuid4()}"
        async with make_worker(client, task_queue, plugins=plugins):
            handle = await client.start_workflow(
                PublishingWorkflow.run, False, id=f"hist-{label}-{uuid.uuid4()}", task_queue=task_queue
            )
            await handle.result()
        histories[label] = await history_event_types(handle)
    assert histories["with"] == histories["without"]
    assert len(histories["with"]) == len(histories["without"])
    # Only the workflow's own activity was scheduled: no event-publishing activities, no markers.
    assert histories["with"].count("EVENT_TYPE_ACTIVITY_TASK_SCHEDULED") == 1
    assert "EVENT_TYPE_MARKER_RECORDED" not in histories["with"]
    # Only the plugin run published lifecycle events; both runs published the workflow's own events.
    assert len(captured_events.named(ApplicationEventNames.WORKFLOW_START)) == 1
    assert len(captured_events.of_type("order.completed")) == 2


async def test_replaying_history_emits_nothing_while_queries_still_publish(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"nocache-{uuid.uuid4()}"
    # No workflow cache: every workflow task and every query replays the whole history first.
    async with make_worker(client, task_queue, max_cached_workflows=0):
        handle = await client.start_workflow(PublishingWorkflow.run, True, id=workflow_id, task_queue=task_queue)
        # Query once the run has history to replay (its activity finished); events signal nothing to await.
        while not captured_events.named(ApplicationEventNames.ACTIVITY_END):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        assert await handle.query(PublishingWorkflow.progress) == "waiting"
        await handle.signal(PublishingWorkflow.release)
        ids = await handle.result()
    types = [e.event_type for e in of_workflow(captured_events, workflow_id)]
    assert types.count("order.started") == 1
    assert types.count("order.validated") == 1
    assert types.count("order.completed") == 1
    assert types.count("order.progress_queried") == 1
    names = [e.event_name for e in of_workflow(captured_events, workflow_id)]
    assert names.count(ApplicationEventNames.WORKFLOW_START) == 1
    assert names.count(ApplicationEventNames.WORKFLOW_END) == 1
    assert [
        e.event_id
        for e in of_workflow(captured_events, workflow_id)
        if e.event_type in ("order.started", "order.validated", "order.completed")
    ] == ids


async def test_reexecuted_workflow_task_repeats_the_same_event_ids(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    workflow_id = f"crash-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        assert (
            await client.execute_workflow(CrashingOnceWorkflow.run, id=workflow_id, task_queue=task_queue)
            == "recovered"
        )
    received = [e for e in of_workflow(captured_events, workflow_id) if e.event_type == "order.received"]
    starts = of_workflow(captured_events, workflow_id, ApplicationEventNames.WORKFLOW_START)
    ends = of_workflow(captured_events, workflow_id, ApplicationEventNames.WORKFLOW_END)
    # The first task failed after publishing; its retry published again — with the very same ids.
    assert len(received) == 2 and received[0].event_id == received[1].event_id
    assert len(starts) == 2 and starts[0].event_id == starts[1].event_id
    assert received[0].metadata.created_timestamp is not None
    # A failed task is not the end of the run: one workflow_end, completed.
    assert [e.metadata.workflow_state for e in ends] == [WorkflowStates.COMPLETED]
    history = await history_event_types(client.get_workflow_handle(workflow_id))
    assert "EVENT_TYPE_WORKFLOW_TASK_FAILED" in history
