"""The pure part: exception → terminal state / attempt status, and the shape and ids of lifecycle events."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from temporalio.activity import ActivityCancellationDetails, _CompleteAsyncError
from temporalio.converter import PayloadConverter
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState
from temporalio.workflow import ContinueAsNewError

from appevents import ApplicationEventNames, Event, EventTypes, WorkflowStates
from appevents.temporal._interceptor import TRACE_HEADER, _publish, lifecycle_failures, trace_from_headers
from appevents.temporal._lifecycle import (
    LIFECYCLE_ID_NAMESPACE,
    ActivityRef,
    ActivityStatus,
    WorkflowRef,
    activity_end_event,
    activity_start_event,
    activity_status_for,
    lifecycle_event_id,
    workflow_end_event,
    workflow_start_event,
    workflow_state_for,
)

REF = WorkflowRef(workflow_type="Orders", workflow_id="wf-1", run_id="run-1", namespace="default", task_queue="q")
ACTIVITY = ActivityRef(
    activity_type="charge",
    activity_id="7",
    attempt=2,
    task_queue="q",
    workflow_type="Orders",
    workflow_id="wf-1",
    workflow_run_id="run-1",
)


class _ContinueAsNew(ContinueAsNewError):
    """temporalio forbids constructing ContinueAsNewError itself; its runtime raises a subclass like this."""


def _temporal_failure(error: BaseException) -> bool:
    return isinstance(error, ApplicationError | ActivityError | CancelledError)


def _activity_error(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "activity failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="w",
        activity_type="charge",
        activity_id="7",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "cancel_requested", "state"),
    [
        (None, False, WorkflowStates.COMPLETED),
        (ApplicationError("bad"), False, WorkflowStates.FAILED),
        (_activity_error(ApplicationError("declined")), False, WorkflowStates.FAILED),
        (asyncio.CancelledError(), True, WorkflowStates.CANCELLED),
        (_activity_error(CancelledError("cancelled")), True, WorkflowStates.CANCELLED),
        (asyncio.CancelledError(), False, WorkflowStates.FAILED),
        (_ContinueAsNew(), False, WorkflowStates.CONTINUED_AS_NEW),
        (RuntimeError("bug"), False, None),
        (KeyError("bug"), True, None),
    ],
    ids=[
        "success",
        "application-error",
        "activity-failure",
        "asyncio-cancel-requested",
        "activity-cancelled-after-request",
        "asyncio-cancel-unrequested-fails",
        "continue-as-new",
        "plain-exception-fails-the-task-not-the-run",
        "plain-exception-during-cancel",
    ],
)
def test_workflow_state_for_mirrors_temporalio(
    error: BaseException | None, cancel_requested: bool, state: WorkflowStates | None
) -> None:
    assert workflow_state_for(error, cancel_requested=cancel_requested, is_failure=_temporal_failure) == state


def test_workflow_failure_exception_types_count_as_failed() -> None:
    assert workflow_state_for(KeyError("x"), cancel_requested=False, is_failure=lambda e: True) is WorkflowStates.FAILED


@pytest.mark.parametrize(
    ("error", "cancellation", "status"),
    [
        (None, None, ActivityStatus.COMPLETED),
        (RuntimeError("x"), None, ActivityStatus.FAILED),
        (asyncio.CancelledError(), ActivityCancellationDetails(cancel_requested=True), ActivityStatus.CANCELLED),
        (CancelledError("x"), ActivityCancellationDetails(cancel_requested=True), ActivityStatus.CANCELLED),
        (asyncio.CancelledError(), ActivityCancellationDetails(worker_shutdown=True), ActivityStatus.CANCELLED),
        (asyncio.CancelledError(), ActivityCancellationDetails(timed_out=True), ActivityStatus.TIMED_OUT),
        (asyncio.CancelledError(), ActivityCancellationDetails(paused=True), ActivityStatus.FAILED),
        (asyncio.CancelledError(), ActivityCancellationDetails(reset=True), ActivityStatus.FAILED),
        # The function raised CancelledError itself (or a heartbeat failed): temporalio reports a failure.
        (asyncio.CancelledError(), None, ActivityStatus.FAILED),
        # After a timeout the server has recorded it: a late failure or result is refused.
        (RuntimeError("cleanup"), ActivityCancellationDetails(timed_out=True), ActivityStatus.TIMED_OUT),
        (None, ActivityCancellationDetails(timed_out=True), ActivityStatus.TIMED_OUT),
        (
            asyncio.CancelledError(),
            ActivityCancellationDetails(timed_out=True, not_found=True),
            ActivityStatus.TIMED_OUT,
        ),
        # The server no longer knows the attempt (its workflow closed): whatever the function did is refused.
        (None, ActivityCancellationDetails(not_found=True), ActivityStatus.COMPLETION_REFUSED),
        (asyncio.CancelledError(), ActivityCancellationDetails(not_found=True), ActivityStatus.COMPLETION_REFUSED),
        (RuntimeError("x"), ActivityCancellationDetails(not_found=True), ActivityStatus.COMPLETION_REFUSED),
        # A cancel request the function ignored: the server accepts the result while the workflow is open.
        (None, ActivityCancellationDetails(cancel_requested=True), ActivityStatus.COMPLETED),
        (_CompleteAsyncError(), None, ActivityStatus.COMPLETING_ASYNC),
    ],
)
def test_activity_status_for(
    error: BaseException | None, cancellation: ActivityCancellationDetails | None, status: ActivityStatus
) -> None:
    assert activity_status_for(error, cancellation) is status


def test_a_refused_completion_says_what_the_function_did() -> None:
    not_found = ActivityCancellationDetails(not_found=True)
    end = activity_end_event(ACTIVITY, ActivityStatus.COMPLETION_REFUSED, 15_000, None, not_found)
    assert (end.data["status"], end.data["outcome"]) == ("completion_refused", "completed")
    assert end.data["cancellation_reasons"] == ["not_found"]
    assert "error_type" not in end.data
    failed = activity_end_event(ACTIVITY, ActivityStatus.COMPLETION_REFUSED, 3, RuntimeError("late"), not_found)
    assert (failed.data["outcome"], failed.data["error_type"]) == ("failed", "RuntimeError")


def test_activity_end_names_why_temporalio_cancelled_the_attempt() -> None:
    paused = ActivityCancellationDetails(paused=True)
    end = activity_end_event(ACTIVITY, ActivityStatus.FAILED, 3, asyncio.CancelledError(), paused)
    assert (end.data["status"], end.data["error_type"]) == ("failed", "CancelledError")
    assert end.data["cancellation_reasons"] == ["paused"]


def test_workflow_end_sets_the_terminal_state_and_error() -> None:
    end = workflow_end_event(REF, WorkflowStates.FAILED, 1234, ApplicationError("bad input", type="BadInput"))
    assert (end.event_type, end.event_name) == (EventTypes.WORKFLOW_LIFECYCLE, ApplicationEventNames.WORKFLOW_END)
    assert end.metadata.workflow_state == "failed"
    assert end.data["duration_ms"] == 1234
    assert end.data["error_type"] == "ApplicationError"
    assert end.data["error_message"] == "bad input"
    assert end.data["application_error_type"] == "BadInput"
    assert (end.metadata.workflow_id, end.metadata.workflow_run_id) == ("wf-1", "run-1")


def test_lifecycle_ids_are_stable_per_step_and_distinct_between_steps() -> None:
    assert workflow_start_event(REF).event_id == workflow_start_event(REF).event_id
    end = workflow_end_event(REF, WorkflowStates.COMPLETED, 1)
    assert end.event_id == workflow_end_event(REF, WorkflowStates.COMPLETED, 5).event_id
    assert end.event_id != workflow_start_event(REF).event_id
    next_attempt = ActivityRef(**{**{f: getattr(ACTIVITY, f) for f in ACTIVITY.__slots__}, "attempt": 3})
    assert activity_start_event(ACTIVITY).event_id == activity_start_event(ACTIVITY).event_id
    assert activity_start_event(ACTIVITY).event_id != activity_start_event(next_attempt).event_id
    assert activity_start_event(ACTIVITY).event_id != activity_end_event(ACTIVITY, ActivityStatus.COMPLETED, 1).event_id


@pytest.mark.parametrize("parts", [("wf-1", "run-1", "workflow_start"), ("", "r", "7", "2", "activity_end"), ("é",)])
def test_lifecycle_event_id_is_the_standard_uuid5(parts: tuple[str, ...]) -> None:
    expected = uuid.uuid5(LIFECYCLE_ID_NAMESPACE, "\x1f".join(parts))
    assert lifecycle_event_id(*parts) == str(expected)
    assert uuid.UUID(lifecycle_event_id(*parts)).version == 5


def test_activity_end_reports_attempt_status_and_error_type() -> None:
    end = activity_end_event(ACTIVITY, ActivityStatus.FAILED, 40, RuntimeError("card declined"))
    assert end.event_name == ApplicationEventNames.ACTIVITY_END
    assert end.data == {
        "activity_type": "charge",
        "attempt": 2,
        "status": "failed",
        "duration_ms": 40,
        "error_type": "RuntimeError",
        "error_message": "card declined",
    }
    assert (end.metadata.activity_type, end.metadata.attempt, end.metadata.workflow_id) == ("charge", 2, "wf-1")


class _BrokenRef(Exception):
    """A lifecycle event that cannot be built (raised by the builder below, and only there)."""


def test_lifecycle_build_failures_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    def build() -> Event:
        raise _BrokenRef("no workflow info")

    with caplog.at_level(logging.ERROR, logger="appevents.temporal"):
        for _ in range(3):
            _publish(build)  # never raises: instrumentation must not fail the workflow
    assert lifecycle_failures.count("lifecycle:_BrokenRef") == 3
    [record] = [r for r in caplog.records if "_BrokenRef" in r.getMessage()]
    assert "no workflow info" in record.getMessage()


def test_trace_from_headers_reads_the_callers_w3c_trace_context() -> None:
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    [payload] = PayloadConverter.default.to_payloads([carrier])
    assert trace_from_headers({TRACE_HEADER: payload}) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")


def test_trace_from_headers_ignores_missing_and_foreign_headers() -> None:
    [not_a_carrier] = PayloadConverter.default.to_payloads(["a string, not a carrier"])
    [invalid] = PayloadConverter.default.to_payloads([{"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"}])
    assert trace_from_headers({}) is None
    assert trace_from_headers({TRACE_HEADER: not_a_carrier}) is None
    assert trace_from_headers({TRACE_HEADER: invalid}) is None
