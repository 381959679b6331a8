"""``EventInterceptor``: lifecycle events for every workflow run and activity attempt, without code in either.

What runs where, and why it is safe:

- **Workflow side** (``workflow_start``/``workflow_end``) runs *inside* the workflow sandbox, as part of workflow
  code, so it obeys the workflow rules: it reads only ``workflow.info()`` and ``workflow.now()`` (deterministic),
  derives event ids from the run (UUIDv5, see :mod:`appevents.temporal.lifecycle`) so it never consumes
  ``workflow.random()``, issues no commands (no activities, no markers, no timers: the workflow's history is the
  same with and without it) and publishes through :meth:`appevents.EventStore.publish`, which is an in-memory
  append to the OTel pipeline — no I/O on the workflow task.
- **Replay**: ``EventStore.publish`` drops events while ``workflow.unsafe.is_replaying_history_events()`` is true,
  so replaying a history (cache eviction, a new worker picking up the run, ``Replayer``) emits nothing; events
  the workflow code publishes from a query handler are still emitted. A workflow task that failed and is retried
  is not a replay: its events are emitted again with the *same* ids, so a downstream dedupe removes them.
- **Terminal states**: ``workflow_end`` reports what the run method's outcome makes the server record —
  completed, failed, cancelled or continued_as_new (see :func:`~appevents.temporal.lifecycle.workflow_state_for`).
  An exception that temporalio treats as a *task* failure (a plain ``Exception`` not listed in
  ``workflow_failure_exception_types``) ends no run: the task is retried, so no ``workflow_end`` is published.
  Termination and timeouts happen on the server without running workflow code; no worker can report them.
- **Activity side** (``activity_start``/``activity_end`` per attempt) runs in the worker's event loop around the
  activity, outside the sandbox; it reads ``activity.info()`` and the monotonic clock.

Register it once — with :class:`~appevents.temporal.AppEventsPlugin` (which dedupes), or in
``Client.connect(interceptors=[...])`` **or** ``Worker(interceptors=[...])``; temporalio hands client interceptors
to workers, so listing it in both places doubles every event. The appevents and opentelemetry modules must be
passed through the sandbox (the plugin does it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import temporalio.client
import temporalio.worker
from temporalio import activity, workflow
from temporalio.exceptions import FailureError, is_cancelled_exception
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from appevents.models import Event, WorkflowStates
from appevents.store import EventStore
from appevents.temporal.lifecycle import (
    ActivityRef,
    WorkflowRef,
    activity_end_event,
    activity_start_event,
    activity_status_for,
    workflow_end_event,
    workflow_start_event,
    workflow_state_for,
)

__all__ = ["EventInterceptor"]

_logger = logging.getLogger("appevents.temporal")


def _publish(build: Callable[[], Event]) -> None:
    """Build and publish one lifecycle event; instrumentation never fails the workflow or the activity."""
    try:
        EventStore.publish(build())
    except Exception:
        _logger.debug("appevents: could not build a lifecycle event", exc_info=True)


class EventInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """Client and worker interceptor publishing lifecycle events. On a client it only rides along to the worker."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityLifecycleInterceptor(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _WorkflowLifecycleInterceptor


def _workflow_ref() -> WorkflowRef:
    info = workflow.info()
    return WorkflowRef(
        workflow_type=info.workflow_type,
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        namespace=info.namespace,
        task_queue=info.task_queue,
        attempt=info.attempt,
        continued_from_run_id=info.continued_run_id,
        parent_workflow_id=info.parent.workflow_id if info.parent is not None else None,
    )


def _workflow_duration_ms() -> int:
    # Workflow time, not the wall clock: deterministic, and what time-skipping servers advance.
    info = workflow.info()
    # workflow_start_time (the run's start) is newer than start_time (its first workflow task).
    started = getattr(info, "workflow_start_time", None) or info.start_time
    elapsed = workflow.now() - started
    return max(0, int(elapsed.total_seconds() * 1000))


def _cancel_requested(error: BaseException) -> bool:
    cancellation_reason = getattr(workflow, "cancellation_reason", None)
    if cancellation_reason is None:  # temporalio before cancellation_reason(): a cancellation reaching the top
        return is_cancelled_exception(error)  # of the run is, in practice, the requested one
    return cancellation_reason() is not None


def _is_failure(error: BaseException) -> bool:
    is_failure_exception = getattr(workflow, "is_failure_exception", None)
    if is_failure_exception is None:  # older temporalio: only FailureError fails a workflow by default
        return isinstance(error, FailureError)
    return bool(is_failure_exception(error))


def _workflow_end(ref: WorkflowRef, state: WorkflowStates, error: BaseException | None) -> Event:
    return workflow_end_event(ref, state, _workflow_duration_ms(), error)


class _WorkflowLifecycleInterceptor(WorkflowInboundInterceptor):
    """Runs in the sandbox, once per run method execution (again after a failed workflow task is retried)."""

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        ref = _workflow_ref()
        _publish(lambda: workflow_start_event(ref))
        try:
            result = await super().execute_workflow(input)
        except BaseException as error:
            self._report_end(ref, error)
            raise
        _publish(lambda: _workflow_end(ref, WorkflowStates.COMPLETED, None))
        return result

    @staticmethod
    def _report_end(ref: WorkflowRef, error: BaseException) -> None:
        try:
            state = workflow_state_for(error, cancel_requested=_cancel_requested(error), is_failure=_is_failure)
        except Exception:
            _logger.debug("appevents: could not classify a workflow outcome", exc_info=True)
            return
        if state is not None:  # None: a task failure, retried by temporalio; the run goes on
            _publish(lambda: _workflow_end(ref, state, error))


def _activity_ref() -> ActivityRef:
    info = activity.info()
    return ActivityRef(
        activity_type=info.activity_type,
        activity_id=info.activity_id,
        attempt=info.attempt,
        task_queue=info.task_queue,
        workflow_type=info.workflow_type,
        workflow_id=info.workflow_id,
        workflow_run_id=info.workflow_run_id,
        is_local=info.is_local,
    )


class _ActivityLifecycleInterceptor(ActivityInboundInterceptor):
    """Runs in the worker's event loop around every activity attempt (sync activities included)."""

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        ref = _activity_ref()
        _publish(lambda: activity_start_event(ref))
        started = time.monotonic()
        try:
            result = await super().execute_activity(input)
        except BaseException as error:
            duration_ms = int((time.monotonic() - started) * 1000)
            _publish(partial(activity_end_event, ref, activity_status_for(error), duration_ms, error))
            raise
        duration_ms = int((time.monotonic() - started) * 1000)
        _publish(lambda: activity_end_event(ref, activity_status_for(None), duration_ms))
        return result
