"""Workflows for bench/temporal_overhead.py (a module of its own: the workflow sandbox re-imports it per run)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

from appevents import Event, EventStore

_TIMEOUT = timedelta(seconds=60)


@activity.defn
async def work(item: int) -> int:
    return item * 2


@activity.defn
async def publish_event_activity(event_type: str, workflow_id: str) -> None:
    """The application-sdk ``EventStore``'s way: one activity per workflow event."""
    await EventStore.publish_event(Event(event_type=event_type, data={"workflow_id": workflow_id}))


@workflow.defn
class OneActivityWorkflow:
    """The measured work: one activity. With AppEventsPlugin, lifecycle events come from the interceptor."""

    @workflow.run
    async def run(self, item: int) -> int:
        return await workflow.execute_activity(work, item, start_to_close_timeout=_TIMEOUT)


@workflow.defn
class ActivityPerEventWorkflow:
    """The same work, with workflow started/completed events published through extra activities, one per event."""

    @workflow.run
    async def run(self, item: int) -> int:
        workflow_id = workflow.info().workflow_id
        await workflow.execute_activity(
            publish_event_activity, args=["workflow.started", workflow_id], start_to_close_timeout=_TIMEOUT
        )
        result = await workflow.execute_activity(work, item, start_to_close_timeout=_TIMEOUT)
        await workflow.execute_activity(
            publish_event_activity, args=["workflow.completed", workflow_id], start_to_close_timeout=_TIMEOUT
        )
        return result


@workflow.defn
class WaitingWorkflow:
    """Waits until the server closes it (terminated in the latency measurement)."""

    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(timedelta(days=1))
