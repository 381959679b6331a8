"""Lifecycle events, built from plain values: what ``workflow_start``/``workflow_end``/``activity_*``/``worker_start``
look like and how an exception maps to a terminal state.

Pure: no I/O, no clock, no Temporal context — the interceptor reads ``workflow.info()``/``activity.info()`` and
passes the values in, so everything here is unit-testable and safe to call from workflow code.

Event ids are UUIDv5 derived from the execution (workflow id, run id, activity id, attempt), not drawn from
``workflow.uuid4()``: they are the same whenever the same step is reported again (a workflow task re-executed on
another worker, an activity attempt reported twice), so downstream can dedupe on them, and they leave the
workflow's own random stream untouched — adding the plugin to a worker with running workflows cannot change what
``workflow.random()`` returns to user code on replay. A run's ``workflow_end`` id depends on the namespace and the
run id only (:func:`workflow_end_event_id`): the interceptor and every closed-run watcher (see
:mod:`appevents.temporal._watcher`) give the same id for the same run, so N reporters make one logical event.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from hashlib import sha1

from pydantic import JsonValue
from temporalio.activity import ActivityCancellationDetails, _CompleteAsyncError
from temporalio.exceptions import ApplicationError, FailureError, is_cancelled_exception
from temporalio.workflow import ContinueAsNewError

from appevents._models import ApplicationEventNames, Event, EventMetadata, EventTypes, WorkflowStates
from appevents._runtime import random_uuid4

__all__ = [
    "ActivityRef",
    "ActivityStatus",
    "ClosedRun",
    "WorkflowRef",
    "activity_end_event",
    "activity_start_event",
    "activity_status_for",
    "cancellation_reasons",
    "closed_run_end_event",
    "lifecycle_event_id",
    "worker_start_event",
    "workflow_end_event",
    "workflow_end_event_id",
    "workflow_start_event",
    "workflow_state_for",
]

#: Namespace of the UUIDv5 lifecycle event ids (a fixed, random UUID; changing it changes every id).
LIFECYCLE_ID_NAMESPACE = uuid.UUID("6f1d3c52-2b0e-4e55-9a43-7c1f0b9f3d21")
_NAMESPACE_BYTES = LIFECYCLE_ID_NAMESPACE.bytes
#: Error messages are cut to this many characters: events report failures, they do not carry stack dumps.
MAX_ERROR_MESSAGE_CHARS = 500
_CANCELLATION_REASONS = ("cancel_requested", "timed_out", "paused", "reset", "worker_shutdown", "not_found")


class ActivityStatus(StrEnum):
    """How one activity attempt ended (``activity_end.data.status``)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The attempt outlived its heartbeat or start-to-close timeout; the server retries or fails the activity.
    TIMED_OUT = "timed_out"
    #: The activity called ``activity.raise_complete_async()``; it is completed later, outside this worker.
    COMPLETING_ASYNC = "completing_async"
    #: The server no longer knew the attempt when it ended (its workflow had closed, or the activity was resolved
    #: meanwhile): whatever the function did (``data.outcome``) was refused, nothing was recorded for it.
    COMPLETION_REFUSED = "completion_refused"


@dataclass(frozen=True, slots=True)
class WorkflowRef:
    """The workflow run a lifecycle event reports on."""

    workflow_type: str
    workflow_id: str
    run_id: str
    namespace: str
    task_queue: str
    attempt: int = 1
    continued_from_run_id: str | None = None
    parent_workflow_id: str | None = None


@dataclass(frozen=True, slots=True)
class ActivityRef:
    """The activity attempt a lifecycle event reports on (workflow fields are None for standalone activities)."""

    activity_type: str
    activity_id: str
    attempt: int
    task_queue: str
    workflow_type: str | None = None
    workflow_id: str | None = None
    workflow_run_id: str | None = None
    is_local: bool = False


def lifecycle_event_id(*parts: str) -> str:
    """A UUIDv5 from the parts that identify one lifecycle step: the same parts always give the same id.

    Equal to ``str(uuid.uuid5(LIFECYCLE_ID_NAMESPACE, "\\x1f".join(parts)))``, computed by hand: ``uuid.uuid5``
    imports hashlib on every call, and inside the workflow sandbox each import goes through temporalio's import
    hook, which made the id the most expensive part of a workflow lifecycle event.
    """
    digest = bytearray(sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def workflow_end_event_id(namespace: str, run_id: str) -> str:
    """The id of run ``run_id``'s ``workflow_end``: the same from the interceptor (worker code ended the run) and
    from any closed-run watcher (the server ended it), on any worker — one logical event per run."""
    return lifecycle_event_id(namespace, run_id, ApplicationEventNames.WORKFLOW_END)


def workflow_state_for(
    error: BaseException | None,
    *,
    cancel_requested: bool,
    is_failure: Callable[[BaseException], bool],
) -> WorkflowStates | None:
    """The terminal state a workflow run reaches when its run method ends with ``error`` (None: success).

    Mirrors temporalio's own rules, so the state reported is the one the server records:

    - ``ContinueAsNewError`` → continued_as_new (a BaseException: ``except Exception`` misses it);
    - a cancellation (``asyncio.CancelledError``, temporalio ``CancelledError``, or an activity/child error caused
      by one) after the workflow was asked to cancel → cancelled;
    - an ``asyncio.CancelledError`` nobody asked for, or an exception that ``is_failure`` accepts (temporalio
      ``FailureError`` such as ``ApplicationError``, plus the configured ``workflow_failure_exception_types``)
      → failed;
    - any other exception → **None**: temporalio fails the workflow *task*, not the workflow, and retries the task;
      the run has not ended, so no ``workflow_end`` is due.
    """
    if error is None:
        return WorkflowStates.COMPLETED
    if isinstance(error, ContinueAsNewError):
        return WorkflowStates.CONTINUED_AS_NEW
    if cancel_requested and is_cancelled_exception(error):
        return WorkflowStates.CANCELLED
    if isinstance(error, asyncio.CancelledError):
        # temporalio turns an unrequested cancellation into a CancelledError failure of the workflow.
        return WorkflowStates.FAILED
    if isinstance(error, Exception) and is_failure(error):
        return WorkflowStates.FAILED
    return None


def activity_status_for(
    error: BaseException | None, cancellation: ActivityCancellationDetails | None = None
) -> ActivityStatus:
    """How an activity attempt ended as the server records it, from the exception its function raised (None: it
    returned) and ``activity.cancellation_details()`` — whether and why temporalio cancelled the attempt.

    temporalio delivers more than cancel requests as a cancellation; like temporalio, only a requested
    cancellation (or worker shutdown, which temporalio reports the same way) is "cancelled". A timed-out attempt
    (heartbeat or start-to-close) is "timed_out" — also when the function returned or failed after the timeout:
    the server had recorded the timeout and refuses the late outcome. An attempt the server no longer knew
    ("not found": its workflow closed, e.g. was cancelled, or the activity was resolved meanwhile) is
    "completion_refused", whatever the function did: a sync activity in a process pool cannot be interrupted and
    runs to its end, and temporalio still sends its result, which the server refuses. A paused or reset
    activity, a cancellation without details (the function raised ``CancelledError`` itself, or a heartbeat
    failed) is "failed". A cancel request the function ignored, completing anyway, is "completed": the server
    accepts the result while the workflow is open.
    """
    if isinstance(error, _CompleteAsyncError):  # activity.raise_complete_async()
        return ActivityStatus.COMPLETING_ASYNC
    # A timed-out attempt is also unknown to the server ("not found") by then: the timeout is what it recorded.
    if cancellation is not None and cancellation.timed_out:
        return ActivityStatus.TIMED_OUT
    if cancellation is not None and cancellation.not_found:
        return ActivityStatus.COMPLETION_REFUSED
    if error is None:
        return ActivityStatus.COMPLETED
    if not is_cancelled_exception(error) or cancellation is None:
        return ActivityStatus.FAILED
    if cancellation.cancel_requested or cancellation.worker_shutdown:
        return ActivityStatus.CANCELLED
    return ActivityStatus.FAILED


def _function_outcome(error: BaseException | None) -> str:
    """What the activity function itself did: completed, failed or cancelled (raised a cancellation)."""
    if error is None:
        return ActivityStatus.COMPLETED.value
    return ActivityStatus.CANCELLED.value if is_cancelled_exception(error) else ActivityStatus.FAILED.value


def cancellation_reasons(cancellation: ActivityCancellationDetails | None) -> list[str]:
    """The reasons temporalio gives for cancelling an activity attempt, by name (empty: none)."""
    if cancellation is None:
        return []
    return [name for name in _CANCELLATION_REASONS if getattr(cancellation, name)]


def _error_data(error: BaseException | None) -> dict[str, JsonValue]:
    if error is None:
        return {}
    # FailureError.message is the bare message (str() prefixes ApplicationError's own type).
    message = error.message if isinstance(error, FailureError) else str(error)
    data: dict[str, JsonValue] = {
        "error_type": type(error).__name__,
        "error_message": message[:MAX_ERROR_MESSAGE_CHARS],
    }
    if isinstance(error, ApplicationError) and error.type:
        data["application_error_type"] = error.type
    return data


def _workflow_metadata(ref: WorkflowRef, state: WorkflowStates) -> EventMetadata:
    return EventMetadata(
        workflow_type=ref.workflow_type,
        workflow_id=ref.workflow_id,
        workflow_run_id=ref.run_id,
        workflow_state=state.value,
    )


def workflow_start_event(ref: WorkflowRef) -> Event:
    """``workflow_start``: the run began (state running)."""
    data: dict[str, JsonValue] = {
        "workflow_type": ref.workflow_type,
        "namespace": ref.namespace,
        "task_queue": ref.task_queue,
        "attempt": ref.attempt,
    }
    if ref.continued_from_run_id is not None:
        data["continued_from_run_id"] = ref.continued_from_run_id
    if ref.parent_workflow_id is not None:
        data["parent_workflow_id"] = ref.parent_workflow_id
    return Event(
        event_id=lifecycle_event_id(ref.workflow_id, ref.run_id, ApplicationEventNames.WORKFLOW_START),
        event_type=EventTypes.WORKFLOW_LIFECYCLE.value,
        event_name=ApplicationEventNames.WORKFLOW_START.value,
        data=data,
        metadata=_workflow_metadata(ref, WorkflowStates.RUNNING),
    )


def workflow_end_event(
    ref: WorkflowRef, state: WorkflowStates, duration_ms: int, error: BaseException | None = None
) -> Event:
    """``workflow_end``: the run reached ``state``; ``metadata.workflow_state`` carries it, enrichment keeps it."""
    data: dict[str, JsonValue] = {
        "workflow_type": ref.workflow_type,
        "state": state.value,
        "duration_ms": duration_ms,
        "attempt": ref.attempt,
    }
    if state is not WorkflowStates.CONTINUED_AS_NEW:
        data.update(_error_data(error))
    return Event(
        event_id=workflow_end_event_id(ref.namespace, ref.run_id),
        event_type=EventTypes.WORKFLOW_LIFECYCLE.value,
        event_name=ApplicationEventNames.WORKFLOW_END.value,
        data=data,
        metadata=_workflow_metadata(ref, state),
    )


@dataclass(frozen=True, slots=True)
class ClosedRun:
    """A run the server closed without worker code (terminated, timed out), as its visibility record shows it."""

    namespace: str
    task_queue: str
    workflow_type: str
    workflow_id: str
    run_id: str
    #: ``terminated`` or ``timed_out``.
    state: WorkflowStates
    start_time: datetime
    close_time: datetime
    #: The reason given to ``terminate`` (None: none given, or not read).
    reason: str | None = None


def closed_run_end_event(run: ClosedRun) -> Event:
    """``workflow_end`` of a run the server closed: state ``terminated``/``timed_out``, ``duration_ms`` from the
    run's start to its close (server times), ``close_time`` (RFC 3339) and, where recorded, the termination
    ``reason``; ``closed_by`` is ``server``. ``metadata.created_timestamp`` is the close time. Same id as the
    interceptor's ``workflow_end`` for that run (:func:`workflow_end_event_id`)."""
    duration_ms = max(0, int((run.close_time - run.start_time).total_seconds() * 1000))
    data: dict[str, JsonValue] = {
        "workflow_type": run.workflow_type,
        "state": run.state.value,
        "duration_ms": duration_ms,
        "close_time": run.close_time.isoformat(),
        "namespace": run.namespace,
        "task_queue": run.task_queue,
        "closed_by": "server",
    }
    if run.reason:
        data["reason"] = run.reason[:MAX_ERROR_MESSAGE_CHARS]
    metadata = EventMetadata(
        workflow_type=run.workflow_type,
        workflow_id=run.workflow_id,
        workflow_run_id=run.run_id,
        workflow_state=run.state.value,
        created_timestamp=int(run.close_time.timestamp()),
    )
    return Event(
        event_id=workflow_end_event_id(run.namespace, run.run_id),
        event_type=EventTypes.WORKFLOW_LIFECYCLE.value,
        event_name=ApplicationEventNames.WORKFLOW_END.value,
        data=data,
        metadata=metadata,
    )


def _activity_metadata(ref: ActivityRef) -> EventMetadata:
    return EventMetadata(
        activity_type=ref.activity_type,
        activity_id=ref.activity_id,
        attempt=ref.attempt,
        workflow_type=ref.workflow_type,
        workflow_id=ref.workflow_id,
        workflow_run_id=ref.workflow_run_id,
        workflow_state=WorkflowStates.RUNNING.value if ref.workflow_id is not None else None,
    )


def _activity_event_id(ref: ActivityRef, name: ApplicationEventNames) -> str:
    if ref.workflow_run_id is None:
        # A standalone activity has no execution to derive a stable id from.
        return random_uuid4()
    return lifecycle_event_id(ref.workflow_id or "", ref.workflow_run_id, ref.activity_id, str(ref.attempt), name)


def activity_start_event(ref: ActivityRef) -> Event:
    """``activity_start``: one attempt of an activity began."""
    return Event(
        event_id=_activity_event_id(ref, ApplicationEventNames.ACTIVITY_START),
        event_type=EventTypes.ACTIVITY_LIFECYCLE.value,
        event_name=ApplicationEventNames.ACTIVITY_START.value,
        data={
            "activity_type": ref.activity_type,
            "attempt": ref.attempt,
            "task_queue": ref.task_queue,
            "is_local": ref.is_local,
        },
        metadata=_activity_metadata(ref),
    )


def activity_end_event(
    ref: ActivityRef,
    status: ActivityStatus,
    duration_ms: int,
    error: BaseException | None = None,
    cancellation: ActivityCancellationDetails | None = None,
) -> Event:
    """``activity_end``: one attempt ended with ``status``; an attempt that did not complete carries the error
    type and, if temporalio cancelled it, ``cancellation_reasons`` (see :func:`cancellation_reasons`). When the
    server's record differs from what the function did (``timed_out``, ``completion_refused``), ``outcome`` says
    what the function did: completed, failed or cancelled."""
    data: dict[str, JsonValue] = {
        "activity_type": ref.activity_type,
        "attempt": ref.attempt,
        "status": status.value,
        "duration_ms": duration_ms,
    }
    if status in (ActivityStatus.TIMED_OUT, ActivityStatus.COMPLETION_REFUSED):
        data["outcome"] = _function_outcome(error)
    if status in (
        ActivityStatus.FAILED,
        ActivityStatus.CANCELLED,
        ActivityStatus.TIMED_OUT,
        ActivityStatus.COMPLETION_REFUSED,
    ):
        data.update(_error_data(error))
        reasons = cancellation_reasons(cancellation)
        if reasons:
            data["cancellation_reasons"] = [reason for reason in reasons]
    return Event(
        event_id=_activity_event_id(ref, ApplicationEventNames.ACTIVITY_END),
        event_type=EventTypes.ACTIVITY_LIFECYCLE.value,
        event_name=ApplicationEventNames.ACTIVITY_END.value,
        data=data,
        metadata=_activity_metadata(ref),
    )


def worker_start_event(
    *,
    task_queue: str,
    namespace: str,
    build_id: str | None,
    identity: str | None,
    temporalio_version: str,
    appevents_version: str,
) -> Event:
    """``worker_start``: a worker began polling ``task_queue``."""
    return Event(
        event_type=EventTypes.WORKER_LIFECYCLE.value,
        event_name=ApplicationEventNames.WORKER_START.value,
        data={
            "task_queue": task_queue,
            "namespace": namespace,
            "build_id": build_id,
            "identity": identity,
            "temporalio_version": temporalio_version,
            "appevents_version": appevents_version,
        },
    )
