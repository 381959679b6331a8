"""Redaction end to end through Segment: a lifecycle event's scalar ``data`` becomes track properties, and
credential-like keys arrive as ``"[REDACTED]"`` — at the receiver and in the segment library's DEBUG dump."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from segment_events import lifecycle_event

from appevents import ApplicationEventNames, EventStore, Pipeline
from appevents._redaction import REDACTED
from support.segment_receiver import SegmentReceiver

pytestmark = pytest.mark.timeout(30)

SECRET = "segment-s3cr3t-91d2"


def test_segment_properties_and_its_debug_log_show_redacted_values(
    configure_segment: Callable[..., Pipeline],
    segment_receiver: SegmentReceiver,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    configure_segment()
    event = lifecycle_event(
        ApplicationEventNames.WORKFLOW_END,
        data={"duration_ms": 12, "Access_Token": SECRET, "PASSWORD": SECRET, "status": "ok"},
    )

    EventStore.publish(event)
    assert EventStore.flush_sync(10)

    [request] = segment_receiver.requests
    [message] = request.messages
    properties = message["properties"]
    assert properties["Access_Token"] == REDACTED
    assert properties["PASSWORD"] == REDACTED
    assert (properties["duration_ms"], properties["status"]) == (12, "ok")
    assert SECRET not in str(request.body)
    # The segment library dumps each request body at DEBUG ("making request: ..."): it shows the redacted view.
    dumps = [r.getMessage() for r in debug_logs.records if r.getMessage().startswith("making request")]
    assert dumps and all(REDACTED in dump for dump in dumps)
    assert SECRET not in debug_logs.text
