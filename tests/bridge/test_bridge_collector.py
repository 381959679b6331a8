"""A real OpenTelemetry Collector pipeline into the bridge: a JSON-lines events file (what ``appevents tail --json``
writes) → the trimmed ``otelcol-contrib`` with ``collector/otelcol-filelog.yaml`` (filelog → memory_limiter →
batch → otlphttp, gzip, bearer token) → ``appevents bridge`` → the Dapr stand-in. Every event arrives, unchanged."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from appevents import Event
from support.bridge_process import TOKEN, BridgeProcess, delivered, events
from support.dapr_sidecar import HttpReceiver
from support.otelcol import run_collector
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)


def test_events_file_through_the_collector_and_the_bridge_to_dapr(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver, tmp_path: Path
) -> None:
    bridge = start_bridge()
    events_file = tmp_path / "events.jsonl"
    first = [*events(1500, tag="file"), Event(event_type="worker.lifecycle", event_name="worker_start")]
    events_file.write_text("".join(e.model_dump_json() + "\n" for e in first))
    with run_collector(
        events_file=events_file, bridge_endpoint=bridge.http_url, token=TOKEN, log_path=tmp_path / "otelcol.log"
    ) as collector:
        wait_until(lambda: len(delivered(receiver)) >= len(first), timeout_s=30)
        # lines appended while the collector follows the file, and a line that is not an event
        later = events(200, tag="appended")
        with events_file.open("a") as out:
            out.write("not an event, just a log line\n")
            out.writelines(e.model_dump_json() + "\n" for e in later)
        wait_until(lambda: len(delivered(receiver)) >= len(first) + len(later), timeout_s=30)
        assert collector.stop() == 0
    arrived = {e["event_id"]: e for e in delivered(receiver)}
    assert arrived == {e.event_id: json.loads(e.model_dump_json()) for e in (*first, *later)}
    assert len(delivered(receiver)) == len(arrived)  # each once
    assert bridge.terminate() == 0
    assert "1 record(s) ignored" in bridge.log()


def test_a_wrong_token_in_the_collector_delivers_nothing(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver, tmp_path: Path
) -> None:
    bridge = start_bridge()
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(e.model_dump_json() + "\n" for e in events(10)))
    with run_collector(
        events_file=events_file, bridge_endpoint=bridge.http_url, token="not-the-token", log_path=tmp_path / "c.log"
    ) as collector:
        # \b: a port such as 34017 in the collector's log is not the status.
        wait_until(lambda: re.search(r"\b401\b|Unauthorized", collector.log()) is not None, timeout_s=30)
    assert receiver.requests == []
    assert bridge.terminate() == 0
    assert "unauthorized" in bridge.log()  # logged once, without the token
