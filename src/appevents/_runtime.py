"""Facts about where the current code runs, looked up cheaply and without importing optional packages.

temporalio is an optional dependency: when it has not been imported, no code can be running inside a Temporal
workflow or activity, so the lookups below answer without importing it.
"""

from __future__ import annotations

import os
import sys
from random import getrandbits
from typing import Any

from appevents._settings import DEFAULT_MAX_EVENT_BYTES

_max_event_bytes: int | None = None


def set_max_event_bytes(limit: int | None) -> None:
    """Set the cap on an event's encoded size applied at :class:`~appevents.Event` construction and assignment
    (``configure`` passes the active settings' value; None: read ``APPEVENTS_MAX_EVENT_BYTES`` from the
    environment at next use)."""
    global _max_event_bytes
    _max_event_bytes = limit


def max_event_bytes() -> int:
    """The cap in force: the configured one, else the environment's, else the default."""
    global _max_event_bytes
    if _max_event_bytes is None:
        if temporal_workflow_module() is not None:
            return DEFAULT_MAX_EVENT_BYTES  # workflow code must not read the environment; configure() sets it
        try:
            _max_event_bytes = int(os.environ.get("APPEVENTS_MAX_EVENT_BYTES", DEFAULT_MAX_EVENT_BYTES))
        except ValueError:  # configure() reports the bad value; construction keeps the default meanwhile
            _max_event_bytes = DEFAULT_MAX_EVENT_BYTES
    return _max_event_bytes


def temporal_workflow_module() -> Any | None:
    """``temporalio.workflow`` if the caller runs inside a workflow, else None."""
    workflow = sys.modules.get("temporalio.workflow")
    if workflow is not None and workflow.in_workflow():
        return workflow
    return None


def temporal_activity_module() -> Any | None:
    """``temporalio.activity`` if the caller runs inside an activity, else None."""
    activity = sys.modules.get("temporalio.activity")
    if activity is not None and activity.in_activity():
        return activity
    return None


def new_event_id() -> str:
    """A fresh UUID; inside a workflow from ``workflow.uuid4()`` so a re-executed workflow task repeats it."""
    workflow = temporal_workflow_module()
    if workflow is not None and not _is_read_only(workflow):
        return str(workflow.uuid4())
    # Queries and update validators are read-only (workflow.uuid4() raises there) and never replayed: any id will do.
    return random_uuid4()


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def random_uuid4() -> str:
    """A random (version 4) UUID string, from the process's Mersenne Twister instead of ``os.urandom``.

    Event ids must be unique, not unguessable: ``random`` is seeded from the OS at start and reseeded in forked
    children, and 122 random bits make collisions negligible. It costs ~1 µs where ``str(uuid.uuid4())`` costs
    ~3.5 µs (a system call) — on every event's construction, on the caller's path.
    """
    digits = f"{(getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _is_read_only(workflow: Any) -> bool:
    return bool(workflow.unsafe.is_read_only())


def is_replaying(workflow: Any) -> bool:
    """True while the workflow replays history events (queries and live execution answer False)."""
    return bool(workflow.unsafe.is_replaying_history_events())
