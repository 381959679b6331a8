"""Lifecycle events built the way the Temporal integration builds them (event_name + metadata), for the tests."""

from __future__ import annotations

from pydantic import JsonValue

from appevents import ApplicationEventNames, Event, EventMetadata, EventTypes, WorkflowStates

_WORKFLOW_NAMES = {ApplicationEventNames.WORKFLOW_START, ApplicationEventNames.WORKFLOW_END}


def lifecycle_event(
    name: ApplicationEventNames,
    *,
    state: WorkflowStates | None = WorkflowStates.RUNNING,
    workflow_id: str = "invoice-42",
    tenant: str | None = None,
    data: dict[str, JsonValue] | None = None,
) -> Event:
    """A lifecycle event of an ``InvoiceWorkflow`` run (activity events carry the ``charge_card`` activity)."""
    metadata = EventMetadata(
        workflow_type="InvoiceWorkflow",
        workflow_id=workflow_id,
        workflow_run_id="run-7",
        workflow_state=state.value if state is not None else None,
        tenant_id=tenant,
    )
    if name in _WORKFLOW_NAMES:
        event_type = EventTypes.WORKFLOW_LIFECYCLE.value
    else:
        event_type = EventTypes.ACTIVITY_LIFECYCLE.value
        metadata.activity_type = "charge_card"
        metadata.activity_id = "3"
        metadata.attempt = 2
    return Event(event_type=event_type, event_name=name.value, data=data or {}, metadata=metadata)


def business_event() -> Event:
    return Event(event_type="order.received", data={"order_id": "o-1"})
