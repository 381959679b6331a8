"""The `captured_events` fixture, used the way an application's test suite uses it."""

from __future__ import annotations

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
