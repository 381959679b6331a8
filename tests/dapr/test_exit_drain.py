"""Events still queued when the process ends reach the sidecar: at a normal interpreter exit (no flush) and on
SIGTERM. The app runs in a child process (``sys.executable``) against the stand-in sidecar in this process.

The core drains at exit before ``concurrent.futures`` refuses new work, and turns SIGTERM into ``SystemExit`` when
nobody else handles it; these tests show the Dapr exporter (which sends through a thread pool) profits in every
mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from support.dapr_sidecar import DaprSidecar, HttpReceiver

pytestmark = pytest.mark.timeout(90)

EVENTS = 200

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time

    from appevents import AppEventsSettings, Event, EventStore, configure

    configure(AppEventsSettings(exporters=["dapr"]))
    for n in range(EVENTS):
        EventStore.publish(Event(event_type="order.received", data={"n": n}))
    if sys.argv[1] == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # interrupted: SIGTERM raises SystemExit here
        sys.exit("SIGTERM did not end the process")
    """
).replace("EVENTS", str(EVENTS))


def run_child(ending: str) -> subprocess.CompletedProcess[str]:
    """Run the app with this process's environment (set by ``dapr_env``)."""
    return subprocess.run(
        [sys.executable, "-c", CHILD, ending], env=dict(os.environ), capture_output=True, text=True, timeout=60
    )


def received_numbers(sidecar: DaprSidecar, receiver: HttpReceiver) -> list[int]:
    if sidecar.published:
        return [json.loads(p.data)["data"]["n"] for p in sidecar.published]
    numbers: list[int] = []
    for body in receiver.bodies():
        document = json.loads(body)
        numbers += [e["data"]["n"] for e in (document if isinstance(document, list) else [document])]
    return numbers


@pytest.mark.parametrize("mode", ["binding", "batch", "pubsub"])
@pytest.mark.parametrize(("ending", "exit_code"), [("return", 0), ("sigterm", 128 + 15)])
def test_events_queued_at_process_end_are_all_delivered(
    sidecar: DaprSidecar, receiver: HttpReceiver, dapr_env, mode: str, ending: str, exit_code: int
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    sidecar.register("events", "pubsub.redis")
    dapr_env(sidecar, APPEVENTS_DAPR_MODE=mode, APPEVENTS_DAPR_PUBSUB="events")

    result = run_child(ending)

    assert result.returncode == exit_code, result.stderr
    assert sorted(received_numbers(sidecar, receiver)) == list(range(EVENTS)), result.stderr
    assert "cannot schedule new futures" not in result.stderr
