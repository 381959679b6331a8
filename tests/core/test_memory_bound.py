"""A million events against a destination that is down (or slower than the publisher): memory stays bounded and
every event that is not delivered is counted.

Each run is a child interpreter, so its peak RSS is its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appevents._sqlite_log import LocalEventLog
from support.dapr_sidecar import free_port

pytestmark = pytest.mark.timeout(180)

EVENTS = 1_000_000

APP = textwrap.dedent(
    """
    import json, sys
    from appevents import Event, EventStore

    def kib(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))

    for n in range(1000):  # warm up: the pipeline, its threads, the exporter
        EventStore.publish(Event(event_type="load.test", data={"n": n}))
    EventStore.flush_sync(5)
    baseline = kib("VmRSS:")
    for n in range(int(sys.argv[1])):
        EventStore.publish(Event(event_type="load.test", data={"n": n, "payload": "x" * 200}))
    drained = EventStore.flush_sync(60)
    name = sys.argv[2]
    stats = EventStore.stats()[name]
    print(json.dumps({
        "growth_mib": (kib("VmHWM:") - baseline) / 1024,
        "drained": drained,
        "accepted": stats.accepted, "delivered": stats.delivered, "failed": stats.failed,
        "dropped": stats.dropped, "pending": stats.pending,
        "failed_reasons": stats.failed_reasons, "dropped_reasons": stats.dropped_reasons,
    }))
    """
)


def run(exporter: str, env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", APP, str(EVENTS), exporter],
        env={**os.environ, "APPEVENTS_EXPORTERS": exporter, **env},
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stderr
    figures: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    print(exporter, figures)
    return figures


def test_a_million_events_with_the_sidecar_down_use_bounded_memory_and_are_all_counted() -> None:
    closed = free_port()  # nothing listens here: the sidecar is down for the whole run
    figures = run(
        "dapr",
        {
            "DAPR_GRPC_ENDPOINT": f"127.0.0.1:{closed}",
            "DAPR_HTTP_ENDPOINT": f"http://127.0.0.1:{closed}",
            "APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S": "0.5",
            "APPEVENTS_DAPR_HEALTH_PROBE_TIMEOUT_S": "0.1",
        },
    )
    assert figures["growth_mib"] <= 64  # type: ignore[operator]
    assert figures["accepted"] == EVENTS + 1000
    assert figures["delivered"] == 0 and figures["pending"] == 0
    assert figures["failed"] + figures["dropped"] == EVENTS + 1000  # type: ignore[operator]
    assert figures["dropped_reasons"] == {"queue_full": figures["dropped"]}


def test_a_million_events_into_the_local_log_use_bounded_memory_and_what_is_not_stored_is_counted(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "events.db"
    figures = run("local", {"APPEVENTS_LOCAL_PATH": str(log_path)})
    assert figures["growth_mib"] <= 64  # type: ignore[operator]
    assert figures["drained"] is True and figures["pending"] == 0 and figures["failed"] == 0
    assert figures["accepted"] == EVENTS + 1000
    assert figures["delivered"] + figures["dropped"] == EVENTS + 1000  # type: ignore[operator]
    assert LocalEventLog(log_path).count() == figures["delivered"]
