"""Small helpers shared by the Temporal tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from appevents import ApplicationEventNames, Event
from appevents.temporal import AppEventsPlugin
from appevents.temporal._plugin import PASSTHROUGH_MODULES
from appevents.testing import CapturedEvents
from temporal.workflows import ALL_ACTIVITIES, ALL_WORKFLOWS

#: What a worker without the plugin needs to run workflows that publish (the plugin adds it itself), set up as a
#: user would from the plugin's list.
PASSTHROUGH_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
)


def make_worker(client: Client, task_queue: str, *, plugins: Sequence[Any] | None = None, **options: Any) -> Worker:
    """A worker for every test workflow; with one AppEventsPlugin unless ``plugins`` says otherwise."""
    chosen = [AppEventsPlugin()] if plugins is None else list(plugins)
    if not chosen:
        options.setdefault("workflow_runner", PASSTHROUGH_RUNNER)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=ALL_WORKFLOWS,
        activities=ALL_ACTIVITIES,
        plugins=chosen,
        **options,
    )


def of_workflow(events: CapturedEvents | Sequence[Event], workflow_id: str, name: str | None = None) -> list[Event]:
    """Events about ``workflow_id`` (optionally only lifecycle events called ``name``), in publish order."""
    return [e for e in events if e.metadata.workflow_id == workflow_id and (name is None or e.event_name == name)]


def lifecycle(events: CapturedEvents | Sequence[Event], workflow_id: str) -> list[tuple[str, str | None]]:
    """``(event_name, state-or-status)`` of the lifecycle events about ``workflow_id``."""
    names = {n.value for n in ApplicationEventNames}
    result: list[tuple[str, str | None]] = []
    for e in of_workflow(events, workflow_id):
        if e.event_name in names:
            detail = e.data.get("status") if e.event_name.startswith("activity") else e.metadata.workflow_state
            result.append((e.event_name, str(detail) if detail is not None else None))
    return result


async def history_event_types(handle: WorkflowHandle[Any, Any]) -> list[str]:
    history = await handle.fetch_history()
    return [EventType.Name(event.event_type) for event in history.events]
