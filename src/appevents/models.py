"""The event model: what a caller publishes and what every exporter receives.

Names and fields follow the seed's ``application_sdk.interceptors.models`` so existing call sites keep working;
fields we add (``event_id``, ``tenant_id``, ``trace_id``, ``span_id``, ``sdk_version``) are additions, never renames.

Validation happens here, at construction: a bad event raises :class:`pydantic.ValidationError` naming the field
and the rule, so nothing malformed ever reaches the pipeline.
"""

from __future__ import annotations

import re
import uuid
from enum import StrEnum
from typing import Annotated, Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationInfo, field_validator

from appevents import _runtime

__all__ = [
    "EVENT_TYPE_PATTERN",
    "MAX_EVENT_TYPE_LENGTH",
    "STORED_EVENT_CONTEXT",
    "ApplicationEventNames",
    "Event",
    "EventMetadata",
    "EventTypes",
    "WorkflowStates",
]

#: ``domain.action`` shape: lowercase words joined by dots (``order.received``, ``data_quality.alert``).
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
MAX_EVENT_TYPE_LENGTH = 255
#: Validation context key marking an event read back from a log record or a store (the size cap is not re-applied).
STORED_EVENT_CONTEXT = "appevents_stored_event"
_EVENT_TYPE_RE = re.compile(EVENT_TYPE_PATTERN)


class ApplicationEventNames(StrEnum):
    """Lifecycle event names (``Event.event_name``); the Segment exporter sends only these."""

    WORKFLOW_START = "workflow_start"
    WORKFLOW_END = "workflow_end"
    ACTIVITY_START = "activity_start"
    ACTIVITY_END = "activity_end"
    WORKER_START = "worker_start"


class WorkflowStates(StrEnum):
    """Execution state of the workflow an event belongs to (``EventMetadata.workflow_state``)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    TIMED_OUT = "timed_out"
    CONTINUED_AS_NEW = "continued_as_new"
    UNKNOWN = "unknown"


class EventTypes(StrEnum):
    """Event types appevents itself publishes (callers use their own ``domain.action`` types)."""

    APPLICATION_EVENT = "application_events"
    WORKFLOW_LIFECYCLE = "workflow.lifecycle"
    ACTIVITY_LIFECYCLE = "activity.lifecycle"
    WORKER_LIFECYCLE = "worker.lifecycle"


class EventMetadata(BaseModel):
    """Context attached to an event. Every field is optional: enrichment fills the gaps, never overwrites."""

    model_config = ConfigDict(extra="forbid")

    application_name: str | None = None
    #: Unix time in seconds, as the seed defines it.
    created_timestamp: int | None = None
    topic_name: str | None = None
    workflow_type: str | None = None
    workflow_id: str | None = None
    workflow_run_id: str | None = None
    workflow_state: str | None = None
    activity_type: str | None = None
    activity_id: str | None = None
    attempt: int | None = None
    tenant_id: str | None = None
    #: W3C trace id (32 lowercase hex) of the span current when the event was published.
    trace_id: str | None = None
    #: W3C span id (16 lowercase hex).
    span_id: str | None = None
    sdk_version: str | None = None


class Event(BaseModel):
    """One application event.

    ``event_type`` is a ``domain.action`` name; ``data`` is a JSON object (string keys, finite numbers, no bytes,
    no arbitrary objects, no cycles) whose encoded size is capped by ``APPEVENTS_MAX_EVENT_BYTES``.
    ``Event.model_validate_json(event.model_dump_json())`` round-trips exactly.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    event_type: Annotated[str, Field(max_length=MAX_EVENT_TYPE_LENGTH)]
    event_name: str | None = None
    data: dict[str, JsonValue] = Field(default_factory=dict)
    metadata: EventMetadata = Field(default_factory=EventMetadata)
    #: Generated when absent; inside a Temporal workflow from ``workflow.uuid4()`` (deterministic).
    event_id: str = Field(default_factory=_runtime.new_event_id)

    @field_validator("event_type")
    @classmethod
    def _event_type_shape(cls, value: str) -> str:
        if not _EVENT_TYPE_RE.match(value):
            raise ValueError(
                f"event_type {value!r} must look like 'domain.action': lowercase letters, digits and '_', "
                "words joined by '.', starting with a letter (e.g. 'order.received')"
            )
        return value

    @field_validator("event_id")
    @classmethod
    def _event_id_is_uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"event_id {value!r} must be a UUID string") from None

    @field_validator("data")
    @classmethod
    def _data_size_capped(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if info.context is not None and info.context.get(STORED_EVENT_CONTEXT):
            return value  # checked when it was built; a stored event is read back whatever the cap is now
        limit = _runtime.max_event_bytes()
        size = len(pydantic_core.to_json(value))
        if size > limit:
            raise ValueError(
                f"data encodes to {size} bytes, over the limit of {limit} bytes "
                "(raise APPEVENTS_MAX_EVENT_BYTES or publish a reference to the payload instead)"
            )
        return value
