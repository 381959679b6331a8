"""Pure mapping from an appevents :class:`~appevents.Event` to a Segment ``track`` call. No I/O.

=============  ===========================================================================================
track field    value
=============  ===========================================================================================
``event``      ``settings.event_names[event.event_name]`` (the application-sdk's names by default)
``userId``     ``settings.user_id_template`` with ``{application}``, ``{tenant}`` (default ``app:tenant``)
``messageId``  ``event.event_id`` — Segment dedupes on it: retries and re-executed workflow tasks count once
``timestamp``  when the event was published (the log record's timestamp; ``workflow.now()`` in workflows),
               else ``metadata.created_timestamp``; always timezone-aware UTC
``properties`` the event's scalar ``data`` values (``duration_ms``, ``status``, ``error_type`` … as the
               Temporal integration sets them), then workflow/activity ids, types, state and attempt from the
               metadata, ``application``, ``tenant``, ``event_type``, ``event_name``. Metadata wins on a name
               clash, so ``workflow_state`` is the state the event carries (``failed`` for a failed workflow)
=============  ===========================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from appevents import Event
from appevents_exporter_segment._settings import SegmentExporterSettings

__all__ = ["SegmentTrack", "track_for_event"]

Scalar = str | int | float | bool | None
_SCALARS = (str, int, float, bool)

#: Metadata copied into properties, as ``property name: metadata field``.
_METADATA_PROPERTIES = {
    "workflow_state": "workflow_state",
    "workflow_type": "workflow_type",
    "workflow_id": "workflow_id",
    "workflow_run_id": "workflow_run_id",
    "activity_type": "activity_type",
    "activity_id": "activity_id",
    "attempt": "attempt",
    "trace_id": "trace_id",
}


@dataclass(frozen=True)
class SegmentTrack:
    """The arguments of one ``Client.track`` call."""

    event: str
    user_id: str
    message_id: str
    timestamp: datetime
    properties: dict[str, Scalar] = field(default_factory=dict)


def _event_time(event: Event, timestamp_ns: int | None) -> datetime:
    if timestamp_ns:
        return datetime.fromtimestamp(timestamp_ns / 1e9, tz=UTC)
    if event.metadata.created_timestamp is not None:
        return datetime.fromtimestamp(event.metadata.created_timestamp, tz=UTC)
    return datetime.now(tz=UTC)


def _scalar_data(data: dict[str, Any]) -> dict[str, Scalar]:
    # Nested objects and lists stay out: Segment properties are for filtering and grouping, and one message is
    # capped at 32 KB.
    return {key: value for key, value in data.items() if value is None or isinstance(value, _SCALARS)}


def track_for_event(
    event: Event,
    timestamp_ns: int | None,
    settings: SegmentExporterSettings,
    *,
    default_application: str,
    default_tenant: str,
) -> SegmentTrack | None:
    """The ``track`` call for ``event``, or None when its ``event_name`` is not a mapped lifecycle name.

    ``default_application``/``default_tenant`` stand in when the event's metadata lacks them (records that came in
    through the OTLP bridge unenriched, for example).
    """
    name = settings.segment_event_name(event.event_name)
    if name is None:
        return None
    metadata = event.metadata
    application = metadata.application_name or default_application
    tenant = metadata.tenant_id or default_tenant
    properties = _scalar_data(event.data)
    for prop, attribute in _METADATA_PROPERTIES.items():
        value = getattr(metadata, attribute)
        if value is not None:
            properties[prop] = value
    properties["application"] = application
    properties["tenant"] = tenant
    properties["event_type"] = event.event_type
    properties["event_name"] = event.event_name
    return SegmentTrack(
        event=name,
        user_id=settings.user_id(application, tenant),
        message_id=event.event_id,
        timestamp=_event_time(event, timestamp_ns),
        properties=properties,
    )
