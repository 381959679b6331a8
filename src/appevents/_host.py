"""The process's own ``EventStore``, for a copy of appevents that Temporal's workflow sandbox imported itself.

A worker without ``AppEventsPlugin`` runs workflow code in a sandbox that re-imports appevents, with an
``EventStore`` of its own that nothing configured. That copy imports this module once inside
``workflow.unsafe.imports_passed_through()``; appevents never imports it otherwise, so the sandbox has not got it
yet and temporalio hands over the process's module, whose ``EventStore`` is the configured one.
"""

from __future__ import annotations

from appevents._event_store import EventStore

__all__ = ["EventStore"]
