"""The OTel logs pipeline route, as a user runs it: ``OTEL_LOGS_EXPORTER=appevents_segment opentelemetry-instrument
python app.py`` (the real ``opentelemetry-instrument`` with ``opentelemetry-distro``) against the Segment receiver
and the Dapr stand-in. Each test runs one short application process (about a second)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.dapr_sidecar import DaprSidecar
from support.segment_receiver import SegmentReceiver

WRITE_KEY = "wk-otel-route"

#: The application: one lifecycle event (Segment takes those) and one plain event, published outside Temporal.
APP = textwrap.dedent(
    """
    from appevents import ApplicationEventNames, Event, EventStore

    EventStore.publish(Event(event_type="workflow.lifecycle", event_name=ApplicationEventNames.WORKFLOW_START.value,
                             data={"workflow_name": "DataIngestion"}))
    EventStore.publish(Event(event_type="order.received", data={"order_id": "o-1"}))
    print("published")
    """
)


@pytest.fixture
def segment_receiver() -> Iterator[SegmentReceiver]:
    with SegmentReceiver(WRITE_KEY) as receiver:
        yield receiver


@pytest.fixture
def sidecar() -> Iterator[DaprSidecar]:
    sidecar = DaprSidecar()
    sidecar.register("eventstore", "bindings.kafka")
    sidecar.start()
    yield sidecar
    sidecar.stop()


def _instrumented(tmp_path: Path, env: dict[str, str], *, instrument: bool = True) -> subprocess.CompletedProcess[str]:
    """Run :data:`APP` as ``opentelemetry-instrument python app.py`` (or bare) with ``env`` on a clean base."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("APPEVENTS_", "OTEL_", "DAPR_"))}
    full_env = {
        **base,
        # The distro defaults traces and metrics to OTLP: nothing listens for them here.
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "APPEVENTS_LOCAL_PATH": str(tmp_path / "events.db"),
        "APPEVENTS_SCHEDULE_DELAY_MS": "20",
        "APPEVENTS_SEGMENT_UPLOAD_INTERVAL_MS": "50",
        "OTEL_BLRP_SCHEDULE_DELAY": "50",
        **env,
    }
    command = [sys.executable, str(app)]
    if instrument:
        command = [str(Path(sys.executable).with_name("opentelemetry-instrument")), *command]
    return subprocess.run(command, env=full_env, cwd=tmp_path, capture_output=True, text=True, timeout=60)


def _local_event_types(tmp_path: Path) -> list[str]:
    path = tmp_path / "events.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as connection:
        return [json.loads(body)["event_type"] for (body,) in connection.execute("SELECT body FROM events")]


def _segment_env(receiver: SegmentReceiver) -> dict[str, str]:
    return {"APPEVENTS_SEGMENT_WRITE_KEY": WRITE_KEY, "APPEVENTS_SEGMENT_HOST": receiver.url}


def test_otel_logs_exporter_appevents_segment_delivers_lifecycle_events_to_segment(
    tmp_path: Path, segment_receiver: SegmentReceiver
) -> None:
    run = _instrumented(tmp_path, {"OTEL_LOGS_EXPORTER": "appevents_segment", **_segment_env(segment_receiver)})

    assert run.returncode == 0, run.stderr
    assert [m["event"] for m in segment_receiver.messages] == ["workflow_started"]
    # APPEVENTS_EXPORTERS unset: the global pipeline replaces the default `local` log.
    assert _local_event_types(tmp_path) == []
    assert "Traceback" not in run.stderr


def test_otel_logs_exporter_appevents_dapr_delivers_every_event_to_the_binding(
    tmp_path: Path, sidecar: DaprSidecar
) -> None:
    run = _instrumented(tmp_path, {"OTEL_LOGS_EXPORTER": "appevents_dapr", **sidecar.env()})

    assert run.returncode == 0, run.stderr
    sent = [json.loads(call.data)["event_type"] for call in sidecar.binding_calls]
    # Binding mode sends each event in its own call, up to APPEVENTS_DAPR_MAX_IN_FLIGHT at once: in any order.
    assert sorted(sent) == ["order.received", "workflow.lifecycle"]
    assert {call.name for call in sidecar.binding_calls} == {"eventstore"}


def test_a_destination_named_twice_gets_each_event_once(
    tmp_path: Path, segment_receiver: SegmentReceiver, sidecar: DaprSidecar
) -> None:
    # segment from appevents' own pipeline and from the global one; dapr only from the global one.
    run = _instrumented(
        tmp_path,
        {
            "APPEVENTS_EXPORTERS": "segment,otel",
            "OTEL_LOGS_EXPORTER": "appevents_segment,appevents_dapr",
            **_segment_env(segment_receiver),
            **sidecar.env(),
        },
    )

    assert run.returncode == 0, run.stderr
    ids = [m["messageId"] for m in segment_receiver.messages]
    assert len(ids) == 1 == len(set(ids))
    assert len(sidecar.binding_calls) == 2  # the global pipeline still delivers what appevents does not


def test_otel_sdk_disabled_leaves_the_events_in_the_local_log(
    tmp_path: Path, segment_receiver: SegmentReceiver
) -> None:
    run = _instrumented(
        tmp_path,
        {"OTEL_SDK_DISABLED": "true", "OTEL_LOGS_EXPORTER": "appevents_segment", **_segment_env(segment_receiver)},
    )

    assert run.returncode == 0, run.stderr
    assert segment_receiver.messages == []
    assert _local_event_types(tmp_path) == ["workflow.lifecycle", "order.received"]


def test_without_opentelemetry_instrument_a_named_otel_exporter_says_why_nothing_is_delivered(tmp_path: Path) -> None:
    run = _instrumented(tmp_path, {"APPEVENTS_EXPORTERS": "otel"}, instrument=False)

    assert run.returncode == 0, run.stderr
    assert "no OpenTelemetry LoggerProvider" in run.stderr
    assert run.stderr.count("no OpenTelemetry LoggerProvider") == 1
