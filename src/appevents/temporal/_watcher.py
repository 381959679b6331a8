"""The closed-run watcher: ``workflow_end`` for runs the server closed without running worker code.

Terminate, an execution or run timeout, a terminated cron run that never started, a run whose workflow task fails
forever until someone terminates it: the server closes these runs itself, no worker sees the end, and the
interceptor cannot report it. The watcher asks the server's visibility store instead —
``ListWorkflowExecutions`` with ``TaskQueue = <queue> AND ExecutionStatus IN ('Terminated', 'TimedOut') AND
CloseTime >= <watermark - overlap>`` — and publishes one ``workflow_end`` per such run
(:func:`~appevents.temporal._lifecycle.closed_run_end_event`).

- **Exactly once in effect.** The event id is derived from namespace + run id, the one the interceptor would use
  for that run: N workers (or watchers) on one task queue report the same event with the same id, which Segment
  (``messageId``), Dapr pub/sub (CloudEvent id) and the local log (``event_id`` unique) store once. Runs that
  worker code closed (completed, failed, cancelled, continued-as-new) are never asked for: the status filter
  leaves them to the interceptor.
- **Bounded cost.** One query per task queue per interval (plus, per terminated run, one single-event history
  read for the termination reason, at most :data:`MAX_REASON_READS_PER_POLL` per poll). The watermark — the newest
  close time seen, per task queue, in server time — only moves forward; each query re-reads ``overlap_s`` before
  it for visibility records that arrive late, and runs already reported in that window are skipped. A starting
  watcher looks ``lookback_s`` back: a restart misses nothing that closed within that window while no watcher ran,
  and reads nothing older. Failed queries back off (doubling, up to :data:`MAX_BACKOFF_S`), logged once per kind.
- **Restarts.** With ``APPEVENTS_TEMPORAL_WATCH_STATE_PATH`` the reported runs are kept in an SQLite file
  (:mod:`appevents.temporal._watch_state`): a restarted watcher resumes at its watermark (a run closed while it
  was down is reported, one reported before is not, unless it is older than the lookback window), and watchers
  sharing the file publish each run once. Without it, a restart re-reads the lookback window and publishes
  those runs again, with the same ids.
- **Degrades to one warning.** A server that refuses the query for good (no advanced visibility: the filter is
  not supported; no permission to list workflows; no such namespace) gets one warning and the watcher stops; the
  worker runs on.

Runs outside workflow code, in the worker's event loop (or in ``appevents temporal watch``): not replay-relevant,
no sandbox; it reads the server, never the worker's workflows.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar

from temporalio.api.common.v1 import WorkflowExecution as WorkflowExecutionRef
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from appevents._counting import LogOnce
from appevents._errors import ConfigurationError
from appevents._event_store import EventStore
from appevents._models import Event, WorkflowStates
from appevents.temporal._lifecycle import ClosedRun, closed_run_end_event
from appevents.temporal._settings import TemporalSettings
from appevents.temporal._watch_state import WatchState

__all__ = ["MAX_BACKOFF_S", "MAX_REASON_READS_PER_POLL", "ClosedRunWatcher", "Watermark", "closed_runs_query"]

_logger = logging.getLogger("appevents.temporal")
P = ParamSpec("P")
T = TypeVar("T")

#: Servers that refused the watcher's query for good, by namespace and answer: warned about once per process (a
#: test suite starting a worker per test against the time-skipping server, which has no visibility API, gets one
#: warning, not one per worker).
watch_refusals = LogOnce(_logger)

#: The longest wait between two attempts after failed queries.
MAX_BACKOFF_S = 300.0
#: Termination reasons read per poll (one history read each); later runs of a mass termination carry none.
MAX_REASON_READS_PER_POLL = 50

_STATES: dict[WorkflowExecutionStatus, WorkflowStates] = {
    WorkflowExecutionStatus.TERMINATED: WorkflowStates.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT: WorkflowStates.TIMED_OUT,
}
#: Answers that no retry changes: the server cannot run the query, or will not let us.
_FOR_GOOD = (
    RPCStatusCode.INVALID_ARGUMENT,
    RPCStatusCode.UNIMPLEMENTED,
    RPCStatusCode.PERMISSION_DENIED,
    RPCStatusCode.UNAUTHENTICATED,
    RPCStatusCode.NOT_FOUND,
)


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def closed_runs_query(task_queue: str, since: datetime) -> str:
    """The visibility query for runs of ``task_queue`` the server closed (terminated, timed out) at ``since`` or
    later. Pure."""
    return (
        f"TaskQueue = {_quoted(task_queue)} AND ExecutionStatus IN ('Terminated', 'TimedOut')"
        f" AND CloseTime >= {_quoted(since.astimezone(UTC).isoformat())}"
    )


@dataclass
class Watermark:
    """Where one task queue's watch stands: the newest close time seen (server time) and the runs reported within
    ``overlap`` of it. Pure: no clock, no I/O.

    ``since()`` is where the next query starts; ``is_new``/``record`` keep a run re-read in the overlap from being
    reported twice; ``record`` forgets runs that fell out of the window, so memory holds one window's runs.
    """

    newest: datetime
    overlap: timedelta
    _reported: dict[str, datetime] = field(default_factory=dict)

    def since(self) -> datetime:
        return self.newest - self.overlap

    def is_new(self, run_id: str) -> bool:
        return run_id not in self._reported

    def record(self, run_id: str, close_time: datetime) -> None:
        self._reported[run_id] = close_time
        if close_time > self.newest:
            self.newest = close_time
            floor = self.since()
            for old in [r for r, closed in self._reported.items() if closed < floor]:
                del self._reported[old]

    def __len__(self) -> int:
        return len(self._reported)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WatchStopped(Exception):
    """The server refused the watcher's query for good (see the module docstring); the watcher has stopped."""


class ClosedRunWatcher:
    """Publishes ``workflow_end`` for the runs of ``task_queues`` (in ``client``'s namespace) the server closed.

    ``await watcher.run()`` watches until cancelled (or until the server refuses the query for good: one warning,
    then it returns); ``await watcher.poll()`` runs one round — one query per task queue — and returns the events
    it published. ``now`` is only read once, for the start of the watch window.
    """

    def __init__(
        self,
        client: Client,
        task_queues: Sequence[str],
        settings: TemporalSettings | None = None,
        *,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        settings = settings or TemporalSettings()
        self._client = client
        self._interval_s = settings.watch_interval_s
        self._start = now() - timedelta(seconds=settings.watch_lookback_s)
        self._overlap = timedelta(seconds=settings.watch_overlap_s)
        self._watermarks = {queue: Watermark(self._start, self._overlap) for queue in dict.fromkeys(task_queues)}
        self._state_path = settings.watch_state_path
        self._state: WatchState | None = None
        self._resumed = False
        self._failures = LogOnce(_logger)
        self._state_failures = LogOnce(_logger)
        #: Visibility queries sent (one per task queue per poll), for measurements.
        self.queries = 0
        #: Consecutive failed polls (0 after a poll succeeds).
        self.consecutive_failures = 0

    @property
    def namespace(self) -> str:
        return self._client.namespace

    @property
    def task_queues(self) -> list[str]:
        return list(self._watermarks)

    async def run(self) -> None:
        """Poll every interval until cancelled; back off on errors; return after one warning if the server
        refuses the query for good."""
        try:
            await self._run()
        finally:
            self.close()

    def close(self) -> None:
        """Close the state file, if one is open (``run`` does it when it ends; callers of ``poll`` call it)."""
        if self._state is not None:
            self._state.close()
            self._state = None
            self._resumed = False

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except WatchStopped:
                return
            except RPCError as error:
                self._note_failure(error)
            except Exception as error:  # a bug or an unexpected answer must not stop the worker
                self._note_failure(error)
            else:
                if self.consecutive_failures:
                    _logger.info("appevents: the closed-run watcher reaches the server again")
                    self._failures = LogOnce(_logger)  # report the next outage again
                self.consecutive_failures = 0
            await asyncio.sleep(self._delay_s())

    def _delay_s(self) -> float:
        if not self.consecutive_failures:
            return self._interval_s
        return min(MAX_BACKOFF_S, self._interval_s * 2.0**self.consecutive_failures)

    def _note_failure(self, error: Exception) -> None:
        self.consecutive_failures += 1
        self._failures.failure(
            "watch",
            error,
            f"querying Temporal visibility for closed runs (namespace {self.namespace!r})",
            f"retrying with back-off up to {MAX_BACKOFF_S:.0f} s",
            level=logging.WARNING,
        )

    async def poll(self) -> list[Event]:
        """One round: one query per task queue; publishes and returns the ``workflow_end`` events of runs not
        reported before. Raises :class:`WatchStopped` (after logging one warning) if the server refuses the
        query for good, ``RPCError`` for other failures."""
        if not self._resumed:
            await self._resume()
        published: list[Event] = []
        reasons_left = MAX_REASON_READS_PER_POLL
        for queue, watermark in self._watermarks.items():
            query = closed_runs_query(queue, watermark.since())
            self.queries += 1
            try:
                executions = [execution async for execution in self._client.list_workflows(query)]
            except RPCError as error:
                if error.status in _FOR_GOOD:
                    self._stop(error)
                raise
            # Oldest first, so the watermark moves in order (the server's order is not specified).
            executions.sort(key=lambda execution: execution.close_time or watermark.newest)
            recorded = False
            for execution in executions:
                state = _STATES.get(execution.status) if execution.status is not None else None
                if state is None or execution.close_time is None or not watermark.is_new(execution.run_id):
                    continue
                recorded = True
                if not await self._claim(queue, execution.run_id, execution.close_time):
                    watermark.record(execution.run_id, execution.close_time)  # another watcher published it
                    continue
                reason = None
                if state is WorkflowStates.TERMINATED and reasons_left > 0:
                    reasons_left -= 1
                    reason = await self._termination_reason(execution.id, execution.run_id)
                run = ClosedRun(
                    namespace=self.namespace,
                    task_queue=execution.task_queue or queue,
                    workflow_type=execution.workflow_type,
                    workflow_id=execution.id,
                    run_id=execution.run_id,
                    state=state,
                    start_time=execution.start_time,
                    close_time=execution.close_time,
                    reason=reason,
                )
                event = closed_run_end_event(run)
                EventStore.publish(event)
                published.append(event)
                watermark.record(run.run_id, run.close_time)
            if recorded and self._state is not None:
                await self._keep_state(self._state.forget_before, self.namespace, queue, watermark.since())
        return published

    async def _resume(self) -> None:
        """Open the state file (if any) and resume each task queue at its stored watermark, never further back
        than the lookback window."""
        self._resumed = True
        if self._state_path is None:
            return
        try:
            self._state = await asyncio.to_thread(WatchState, self._state_path)
        except (OSError, sqlite3.Error, ConfigurationError) as error:
            self._state_failures.failure(
                "watch_state",
                error,
                f"opening the watch state {self._state_path}",
                "the watcher keeps it in memory",
                level=logging.WARNING,
            )
            return
        for queue in self._watermarks:
            reported = await self._keep_state(self._state.load, self.namespace, queue)
            if reported:
                newest = max(reported.values())
                if newest > self._start:
                    self._watermarks[queue] = Watermark(newest, self._overlap, dict(reported))

    async def _claim(self, queue: str, run_id: str, close_time: datetime) -> bool:
        """True if this watcher is to publish the run (no state file, or its claim in it succeeded)."""
        if self._state is None:
            return True
        claimed = await self._keep_state(self._state.claim, self.namespace, queue, run_id, close_time)
        return True if claimed is None else claimed  # a state that fails: publish (the id dedupes downstream)

    async def _keep_state(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
        """``call`` in a thread; None (logged once) if the state file fails."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except (OSError, sqlite3.Error) as error:
            self._state_failures.failure(
                "watch_state",
                error,
                f"using the watch state {self._state_path}",
                "the run is reported anyway",
                level=logging.WARNING,
            )
            return None

    def _stop(self, error: RPCError) -> None:
        watch_refusals(
            f"{self.namespace}:{error.status.name}",
            logging.WARNING,
            "appevents: the closed-run watcher stops: the Temporal server refused its visibility query for good "
            "(%s: %s). workflow_end of terminated and timed-out runs in namespace %r is not reported. It needs "
            "advanced visibility (SQL visibility on Temporal >= 1.20, or Elasticsearch; Temporal Cloud has it) and "
            "permission to list workflows in the namespace; APPEVENTS_TEMPORAL_WATCH=false turns it off "
            "(said once per process and namespace).",
            error.status.name,
            error.message,
            self.namespace,
        )
        raise WatchStopped(error.message) from error

    async def _termination_reason(self, workflow_id: str, run_id: str) -> str | None:
        """The reason recorded in the run's last history event (its termination), or None."""
        request = GetWorkflowExecutionHistoryReverseRequest(
            namespace=self.namespace,
            execution=WorkflowExecutionRef(workflow_id=workflow_id, run_id=run_id),
            maximum_page_size=1,
        )
        try:
            response = await self._client.workflow_service.get_workflow_execution_history_reverse(request)
        except RPCError as error:
            _logger.debug("appevents: no termination reason for run %s (%s)", run_id, error)
            return None
        for event in response.history.events:
            if event.HasField("workflow_execution_terminated_event_attributes"):
                return event.workflow_execution_terminated_event_attributes.reason or None
        return None
