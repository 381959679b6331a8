"""Test kit: capture the events your code publishes and assert on them.

Installed as a pytest plugin (entry point ``pytest11``), so the fixture is there without imports::

    async def test_order_flow_publishes_received(captured_events):
        await process_order("o-1")
        [event] = captured_events.of_type("order.received")
        assert event.data["order_id"] == "o-1"

``captured_events`` routes events to memory for the duration of one test (no other destination), then restores
the previous configuration. Events are captured as they are emitted, already enriched; reading them waits for
events still in flight, so assertions see everything published before them.

An ``async def`` test that uses ``captured_events`` runs as written with plain pytest: when no async plugin
(pytest-asyncio, anyio) takes it, this plugin runs it in a fresh event loop. Without pytest (unittest, scripts),
:func:`capturing_events` is the same capture as a context manager; this module imports without pytest.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from appevents._event_store import EventStore, configuration_set_aside, configure
from appevents._memory import CapturedEvents, InMemoryEventExporter
from appevents._settings import AppEventsSettings

__all__ = ["CapturedEvents", "InMemoryEventExporter", "capturing_events"]

#: Markers of the plugins that run async tests themselves: such a test is left to them.
_ASYNC_PLUGIN_MARKERS = ("asyncio", "anyio", "trio")


@contextmanager
def capturing_events() -> Iterator[CapturedEvents]:
    """Route published events to memory inside the ``with`` block; yields the :class:`CapturedEvents` to assert on.

    The application's own pipeline (if any) is set aside untouched and put back afterwards.
    """
    with configuration_set_aside():
        capture = CapturedEvents()
        configure(AppEventsSettings(exporters=[]), processors=[capture])
        try:
            yield capture
        finally:
            EventStore.shutdown()


try:
    import pytest
except ImportError:  # the kit without pytest: capturing_events()
    pass
else:
    __all__ += ["captured_events"]

    @pytest.fixture
    def captured_events() -> Iterator[CapturedEvents]:
        """Route published events to memory for this test; yields the :class:`CapturedEvents` to assert on.

        The application's own pipeline (if any) is set aside untouched and put back afterwards.
        """
        with capturing_events() as capture:
            yield capture

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
        """Run an ``async def`` test that uses ``captured_events`` when no async plugin took it (plain pytest
        would skip it: "async def functions are not natively supported")."""
        if not inspect.iscoroutinefunction(pyfuncitem.obj) or "captured_events" not in pyfuncitem.fixturenames:
            return None
        if any(pyfuncitem.get_closest_marker(marker) for marker in _ASYNC_PLUGIN_MARKERS):
            return None
        arguments: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**arguments))
        return True
