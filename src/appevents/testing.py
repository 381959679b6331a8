"""Test kit: capture the events your code publishes and assert on them.

Installed as a pytest plugin (entry point ``pytest11``), so the fixture is there without imports::

    async def test_order_flow_publishes_received(captured_events):
        await process_order("o-1")
        [event] = captured_events.of_type("order.received")
        assert event.data["order_id"] == "o-1"

``captured_events`` routes events to memory for the duration of one test (no other destination), then restores
the previous configuration. Events are captured as they are emitted, already enriched; reading them waits for
events still in flight, so assertions see everything published before them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appevents._event_store import EventStore, configuration_set_aside, configure
from appevents._memory import CapturedEvents, InMemoryEventExporter
from appevents._settings import AppEventsSettings

__all__ = ["CapturedEvents", "InMemoryEventExporter", "captured_events"]


@pytest.fixture
def captured_events() -> Iterator[CapturedEvents]:
    """Route published events to memory for this test; yields the :class:`CapturedEvents` to assert on.

    The application's own pipeline (if any) is set aside untouched and put back afterwards.
    """
    with configuration_set_aside():
        capture = CapturedEvents()
        configure(AppEventsSettings(exporters=[]), processors=[capture])
        try:
            yield capture
        finally:
            EventStore.shutdown()
