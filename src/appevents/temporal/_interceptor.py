"""``EventInterceptor``: lifecycle events for every workflow run and activity attempt, without code in either.

What runs where, and why it is safe:

- **Workflow side** (``workflow_start``/``workflow_end``) runs *inside* the workflow sandbox, as part of workflow
  code, so it obeys the workflow rules: it reads only ``workflow.info()`` and ``workflow.now()`` (deterministic),
  derives event ids from the run (UUIDv5, see :mod:`appevents.temporal._lifecycle`) so it never consumes
  ``workflow.random()``, issues no commands (no activities, no markers, no timers: the workflow's history is the
  same with and without it) and publishes through :meth:`appevents.EventStore.publish`, which is an in-memory
  append to the OTel pipeline — no I/O on the workflow task.
- **Replay**: ``EventStore.publish`` drops events while ``workflow.unsafe.is_replaying_history_events()`` is true,
  so replaying a history (cache eviction, a new worker picking up the run, ``Replayer``) emits nothing; events
  the workflow code publishes from a query handler are still emitted. A workflow task that failed and is retried
  is not a replay: its events are emitted again with the *same* ids, so a downstream dedupe removes them.
- **Terminal states**: ``workflow_end`` reports what the outcome of the run method — or of a signal handler,
  which can end the run too — makes the server record: completed, failed, cancelled or continued_as_new (see
  :func:`~appevents.temporal._lifecycle.workflow_state_for`); once per run, whichever ends it first. Update
  handlers never end a run (temporalio fails the update, or the workflow task).
  An exception that temporalio treats as a *task* failure (a plain ``Exception`` not listed in
  ``workflow_failure_exception_types``) ends no run: the task is retried, so no ``workflow_end`` is published.
  Termination and timeouts happen on the server without running workflow code; no interceptor can report them:
  the closed-run watcher (:mod:`appevents.temporal._watcher`) does, with the same ``workflow_end`` event id.
  ``completed`` is published when the run method returns, before temporalio serialises its result: a result
  the data converter cannot serialise fails the workflow *task* instead (retried, and reported ``completed``
  again with the same event id), so a ``completed`` event with no closed run behind it means exactly that.
- **Activity side** (``activity_start``/``activity_end`` per attempt) runs in the worker's event loop around the
  activity, outside the sandbox; it reads ``activity.info()``, ``activity.cancellation_details()`` (a timed-out
  attempt reaches the activity as a cancellation too) and the monotonic clock.
- **Trace context**: events published inside a span carry its trace and span ids (enrichment). Where no span
  is current when a lifecycle event is built — the OpenTelemetry interceptor (``OpenTelemetryPlugin``,
  ``TracingInterceptor``) sits *inside* this one, as with ``plugins=[AppEventsPlugin(), OpenTelemetryPlugin()]``
  — the event takes the trace context the caller sent in the run's or the activity's ``_tracer-data`` header
  (W3C trace context, the header those interceptors write), so the trace id does not depend on plugin order.
  Reading a header is deterministic: the same on every replay and on every worker.
- **Set-up**: temporalio asks the interceptor for its activity and workflow interceptors while it constructs the
  worker; that is where the pipeline is configured from the environment (if nobody called
  :func:`appevents.configure`), outside the sandbox. Workflow code never configures it.

Register it once — with :class:`~appevents.temporal.AppEventsPlugin` (which dedupes), or in
``Client.connect(interceptors=[...])`` **or** ``Worker(interceptors=[...])``; temporalio hands client interceptors
to workers, so listing it in both places doubles every event. The appevents and opentelemetry modules must be
passed through the sandbox (the plugin does it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import temporalio.client
import temporalio.worker
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadConverter
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    HandleSignalInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)
from temporalio.workflow import ContinueAsNewError

from appevents._counting import LogOnce
from appevents._event_store import EventStore
from appevents._models import Event
from appevents.temporal._lifecycle import (
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


#: Lifecycle events that could not be built: logged once per kind of failure, counted in ``count(cause)``.
lifecycle_failures = LogOnce(_logger)


#: The header temporalio's OpenTelemetry interceptors carry the caller's trace context in (a JSON W3C carrier).
TRACE_HEADER = "_tracer-data"
_TRACE_CONTEXT = TraceContextTextMapPropagator()

#: ``(trace_id, span_id)`` as enrichment writes them (32 and 16 lowercase hex digits).
TraceIds = tuple[str, str]


def trace_from_headers(headers: Mapping[str, Payload]) -> TraceIds | None:
    """The trace context the caller sent in ``headers`` (see :data:`TRACE_HEADER`), or None: no header, an
    unreadable one, or an invalid context. Pure and deterministic: safe in workflow code."""
    payload = headers.get(TRACE_HEADER)
    if payload is None:
        return None
    try:
        carrier = PayloadConverter.default.from_payloads([payload])[0]
        context = trace.get_current_span(_TRACE_CONTEXT.extract(carrier)).get_span_context()
    except Exception:  # someone else's header of that name: no trace, no failure
        return None
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _publish(build: Callable[[], Event], caller_trace: TraceIds | None = None) -> None:
    """Build and publish one lifecycle event; instrumentation never fails the workflow or the activity.

    ``caller_trace`` is used only where no span is current (the OpenTelemetry interceptor runs inside this one):
    a current span wins, as enrichment never overwrites."""
    try:
        event = build()
        if caller_trace is not None and not trace.get_current_span().get_span_context().is_valid:
            event.metadata.trace_id, event.metadata.span_id = caller_trace
    except Exception as exc:
        lifecycle_failures.failure("lifecycle", exc, "building a Temporal lifecycle event", "it is skipped")
        return
    EventStore.publish(event)


class EventInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """Client and worker interceptor publishing lifecycle events. On a client it only rides along to the worker.

    temporalio asks it for its activity and workflow interceptors while the worker is constructed, outside any
    workflow: that is where the pipeline is configured from the environment if nobody called
    :func:`appevents.configure` — workflow code never configures it (no environment, no files in the sandbox).
    """

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        EventStore.pipeline()
        return _ActivityLifecycleInterceptor(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        EventStore.pipeline()
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
    # Workflow time, not the wall clock: deterministic, and what time-skipping servers advance. workflow_start_time
    # is the run's start (start_time is its first workflow task's).
    elapsed = workflow.now() - workflow.info().workflow_start_time
    return max(0, int(elapsed.total_seconds() * 1000))


#: What temporalio's top-level workflow functions (run method, signal handlers) turn into a run's outcome. Not a
#: bare BaseException: a ``GeneratorExit`` thrown into a workflow coroutine that is closed outside the workflow
#: (a worker stopped with runs in its cache, at interpreter exit) is no outcome, and no workflow API works there.
_RUN_ENDING = (ContinueAsNewError, asyncio.CancelledError, Exception)


class _WorkflowLifecycleInterceptor(WorkflowInboundInterceptor):
    """Runs in the sandbox, one instance per run (a new one after a failed workflow task is retried).

    The run ends where temporalio ends it: in the run method, or in a signal handler (temporalio runs both as
    top-level workflow functions: an exception there fails or cancels the run, ``continue_as_new`` continues it).
    Update handlers cannot end a run: a failure fails the update, continue-as-new or another exception fails the
    workflow task. ``workflow_end`` is published once per run, whichever ends it first.
    """

    def __init__(self, next: WorkflowInboundInterceptor) -> None:
        super().__init__(next)
        self._ended = False
        self._caller_trace: TraceIds | None = None

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        ref = _workflow_ref()
        self._caller_trace = trace_from_headers(input.headers)
        _publish(lambda: workflow_start_event(ref), self._caller_trace)
        try:
            result = await super().execute_workflow(input)
        except _RUN_ENDING as error:
            self._report_end(error)
            raise
        self._report_end(None)
        return result

    async def handle_signal(self, input: HandleSignalInput) -> None:
        try:
            await super().handle_signal(input)
        except _RUN_ENDING as error:
            self._report_end(error)
            raise

    def _report_end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        state = workflow_state_for(
            error, cancel_requested=workflow.cancellation_reason() is not None, is_failure=workflow.is_failure_exception
        )
        if state is None:  # a task failure, retried by temporalio; the run goes on
            return
        self._ended = True
        ref = _workflow_ref()
        _publish(lambda: workflow_end_event(ref, state, _workflow_duration_ms(), error), self._caller_trace)


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
        caller_trace = trace_from_headers(input.headers)
        _publish(lambda: activity_start_event(ref), caller_trace)
        started = time.monotonic()
        error: BaseException | None = None
        try:
            return await super().execute_activity(input)
        except BaseException as raised:
            error = raised
            raise
        finally:
            duration_ms = int((time.monotonic() - started) * 1000)
            # Set before the activity is cancelled: why (requested, timed out, paused, reset, worker shutdown).
            cancellation = activity.cancellation_details()
            status = activity_status_for(error, cancellation)
            _publish(lambda: activity_end_event(ref, status, duration_ms, error, cancellation), caller_trace)
