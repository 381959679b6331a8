"""The `captured_events` fixture, used the way an application's test suite uses it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appevents import Event, EventStore
from appevents.testing import CapturedEvents


async def test_captured_events_sees_what_the_code_under_test_published(
    captured_events: CapturedEvents,
) -> None:
    await EventStore.publish_event(Event(event_type="order.received", data={"order_id": "o-1"}))
    await EventStore.publish_event(Event(event_type="order.shipped", event_name="activity_end"))
    [received] = captured_events.of_type("order.received")
    assert received.data == {"order_id": "o-1"}
    assert received.metadata.created_timestamp is not None, "captured events are already enriched"
    assert [e.event_type for e in captured_events.named("activity_end")] == ["order.shipped"]
    assert len(captured_events) == 2
    captured_events.clear()
    assert list(captured_events) == []


def test_the_fixture_is_available_to_users_without_imports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from appevents import Event, EventStore

        def place_order(order_id):
            EventStore.publish(Event(event_type="order.received", data={"order_id": order_id}))

        def test_order_is_published(captured_events):
            place_order("o-9")
            assert [e.data["order_id"] for e in captured_events.of_type("order.received")] == ["o-9"]

        def test_a_missing_event_fails(captured_events):
            assert captured_events.of_type("order.received"), "nothing was published"
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function")
    result.assert_outcomes(passed=1, failed=1)


#: The README's example, as written there (plus the code under test it calls).
README_EXAMPLE = """
from appevents import Event, EventStore


async def process_order(order_id):
    await EventStore.publish_event(Event(event_type="order.received", data={"order_id": order_id}))


async def test_order_is_announced(captured_events):
    await process_order("o-1")
    [event] = captured_events.of_type("order.received")
    assert event.data["order_id"] == "o-1"


async def test_a_wrong_expectation_fails(captured_events):
    await process_order("o-1")
    assert captured_events.of_type("order.shipped")
"""


@pytest.mark.parametrize(
    "options",
    [
        ("-p", "no:asyncio"),  # plain pytest, no async plugin installed
        ("-o", "asyncio_mode=strict", "-o", "asyncio_default_fixture_loop_scope=function"),  # unmarked in strict mode
        ("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"),  # pytest-asyncio runs it
    ],
)
def test_the_readme_async_example_runs_as_written(pytester: pytest.Pytester, options: tuple[str, ...]) -> None:
    pytester.makepyfile(README_EXAMPLE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *options)
    result.assert_outcomes(passed=1, failed=1)


def test_the_kit_imports_and_captures_without_pytest(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pytest"] = None  # as if pytest were not installed
        from appevents import Event, EventStore
        from appevents.testing import capturing_events
        import appevents.testing
        assert not hasattr(appevents.testing, "captured_events")
        with capturing_events() as captured:
            EventStore.publish(Event(event_type="order.received"))
            print(len(captured.of_type("order.received")))
        """
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "1"
