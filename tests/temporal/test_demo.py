"""The Temporal part of ``appevents demo`` runs the seed-shaped workflows and shows their events live."""

from __future__ import annotations

from collections import Counter

import pytest

from appevents import ApplicationEventNames, Event, WorkflowStates
from appevents.temporal.demo import DEMO_DATASETS, run_temporal_demo
from appevents.temporal.devserver import DevServer
from appevents.testing import CapturedEvents

pytestmark = pytest.mark.timeout(90)


async def test_demo_runs_the_workflows_and_shows_every_event(
    dev_server: DevServer, captured_events: CapturedEvents
) -> None:
    shown: list[Event] = []
    ran = await run_temporal_demo(dev_server.address, shown.append)

    assert ran == len(DEMO_DATASETS)
    assert [e.event_id for e in shown] == [e.event_id for e in captured_events]
    ends = captured_events.named(ApplicationEventNames.WORKFLOW_END)
    assert Counter(e.metadata.workflow_state for e in ends) == {
        WorkflowStates.COMPLETED: 2,
        WorkflowStates.FAILED: 1,
    }
    types = Counter(e.event_type for e in captured_events)
    assert types["workflow.started"] == 3
    assert types["workflow.completed"] == 2
    assert types["workflow.failed"] == 1
    assert types["order.received"] == 2 and types["order.payment_processed"] == 2
    assert types["activity.progress"] >= 4 + 3
    [failed] = captured_events.of_type("workflow.failed")
    assert failed.metadata.workflow_id is not None and "corrupt-export" in failed.metadata.workflow_id
