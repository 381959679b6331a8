"""Workflows and activities the Temporal tests run (a module of its own: the sandbox re-imports it per run)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from appevents import Event, EventStore

HEARTBEAT_TIMEOUT = timedelta(seconds=1)
FAST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=10), backoff_coefficient=1.0)


@activity.defn
async def process_batch(batch_id: str) -> int:
    await EventStore.publish_event(Event(event_type="data.batch_processed", data={"batch_id": batch_id}))
    return 3


@activity.defn
async def flaky(succeed_on_attempt: int) -> str:
    attempt = activity.info().attempt
    if attempt < succeed_on_attempt:
        raise RuntimeError(f"attempt {attempt} fails")
    return f"ok on {attempt}"


@activity.defn
async def publish_via_activity(event_type: str) -> None:
    """The application-sdk's way of publishing workflow events (an extra activity per event); for comparison only."""
    await EventStore.publish_event(Event(event_type=event_type))


@activity.defn
async def stall_heartbeats() -> None:
    """Never heartbeats: the worker's own heartbeat timer times the attempt out and cancels it."""
    await asyncio.sleep(600)


@workflow.defn
class CompletingWorkflow:
    @workflow.run
    async def run(self, sleep_s: float) -> str:
        if sleep_s:
            await workflow.sleep(sleep_s)
        await workflow.execute_activity(
            process_batch, "b-1", start_to_close_timeout=timedelta(seconds=30), retry_policy=FAST_RETRY
        )
        return "done"


@workflow.defn
class FailingWorkflow:
    @workflow.run
    async def run(self, sleep_s: float) -> None:
        if sleep_s:
            await workflow.sleep(sleep_s)
        raise ApplicationError("input rejected", type="BadInput", non_retryable=True)


@workflow.defn
class LookupFailingWorkflow:
    """Raises a plain KeyError: a task failure, unless the worker lists KeyError as a workflow failure type."""

    @workflow.run
    async def run(self) -> None:
        raise KeyError("sku-17")


@workflow.defn
class WaitingWorkflow:
    """Waits (a day of workflow time) until cancelled."""

    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(timedelta(days=1))


@workflow.defn
class ContinuingWorkflow:
    @workflow.run
    async def run(self, remaining: int, sleep_s: float) -> int:
        if sleep_s:
            await workflow.sleep(sleep_s)
        if remaining > 0:
            workflow.continue_as_new(args=[remaining - 1, sleep_s])
        return remaining


@workflow.defn
class RetryingActivityWorkflow:
    @workflow.run
    async def run(self, succeed_on_attempt: int, max_attempts: int) -> str:
        return await workflow.execute_activity(
            flaky,
            succeed_on_attempt,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=10), backoff_coefficient=1.0, maximum_attempts=max_attempts
            ),
        )


@workflow.defn
class PublishingWorkflow:
    """Publishes from workflow code (and from a query) and returns the ids of the events it built."""

    def __init__(self) -> None:
        self.released = False

    @workflow.run
    async def run(self, wait_for_release: bool) -> list[str]:
        ids: list[str] = []
        for step in ("started", "validated"):
            event = Event(event_type=f"order.{step}", data={"step": step})
            ids.append(event.event_id)
            await EventStore.publish_event(event)
        await workflow.execute_activity(
            process_batch, "b-2", start_to_close_timeout=timedelta(seconds=30), retry_policy=FAST_RETRY
        )
        if wait_for_release:
            await workflow.wait_condition(lambda: self.released)
        event = Event(event_type="order.completed")
        ids.append(event.event_id)
        await EventStore.publish_event(event)
        return ids

    @workflow.query
    def progress(self) -> str:
        EventStore.publish(Event(event_type="order.progress_queried"))
        return "waiting" if not self.released else "released"

    @workflow.signal
    def release(self) -> None:
        self.released = True


@workflow.defn
class ActivityPerEventWorkflow:
    """The same work as CompletingWorkflow, its workflow events sent through extra activities (one per event)."""

    @workflow.run
    async def run(self, sleep_s: float) -> str:
        options = {"start_to_close_timeout": timedelta(seconds=30), "retry_policy": FAST_RETRY}
        await workflow.execute_activity(publish_via_activity, "workflow.started", **options)  # type: ignore[arg-type]
        await workflow.execute_activity(process_batch, "b-1", **options)  # type: ignore[arg-type]
        await workflow.execute_activity(publish_via_activity, "workflow.completed", **options)  # type: ignore[arg-type]
        return "done"


@workflow.defn
class CrashingOnceWorkflow:
    """Publishes an event, then fails its first workflow task once with a non-Temporal error (a crashed task)."""

    @workflow.run
    async def run(self) -> str:
        await EventStore.publish_event(Event(event_type="order.received"))
        # History of the first task: started, task scheduled, task started. A retried task sees the failure too.
        if workflow.info().get_current_history_length() <= 3:
            raise RuntimeError("worker crashed mid task")
        await workflow.execute_activity(
            process_batch, "b-3", start_to_close_timeout=timedelta(seconds=30), retry_policy=FAST_RETRY
        )
        return "recovered"


@workflow.defn
class ActivityFailingWorkflow:
    """Fails because its activity exhausted its retries (an ActivityError: a failure, not a task failure)."""

    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            flaky,
            99,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=10), backoff_coefficient=1.0, maximum_attempts=2
            ),
        )


@workflow.defn
class HandlerEndedWorkflow:
    """Waits for its handlers: the ``reject`` signal fails the run, ``restart`` continues it as new, ``finish``
    completes it; the ``check`` update rejects negative numbers (an update failure: the run goes on)."""

    def __init__(self) -> None:
        self.finished = False

    @workflow.run
    async def run(self, restarted: bool) -> str:
        if restarted:
            return "restarted"
        await workflow.wait_condition(lambda: self.finished)
        return "finished"

    @workflow.signal
    def reject(self, reason: str) -> None:
        raise ApplicationError(reason, type="Rejected", non_retryable=True)

    @workflow.signal
    def restart(self) -> None:
        workflow.continue_as_new(True)

    @workflow.signal
    def finish(self) -> None:
        self.finished = True

    @workflow.update
    def check(self, value: int) -> int:
        if value < 0:
            raise ApplicationError(f"{value} is negative", type="Negative")
        return value


@workflow.defn
class HeartbeatTimeoutWorkflow:
    """Its only activity attempt times out (heartbeat timeout, no retries), which fails the run."""

    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            stall_heartbeats,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


ALL_WORKFLOWS = [
    CompletingWorkflow,
    FailingWorkflow,
    LookupFailingWorkflow,
    WaitingWorkflow,
    ContinuingWorkflow,
    RetryingActivityWorkflow,
    PublishingWorkflow,
    ActivityPerEventWorkflow,
    CrashingOnceWorkflow,
    ActivityFailingWorkflow,
    HandlerEndedWorkflow,
    HeartbeatTimeoutWorkflow,
]
ALL_ACTIVITIES = [process_batch, flaky, publish_via_activity, stall_heartbeats]
