"""Dapr delivery: the seed's way (a blocking ``DaprClient.invoke_binding`` per event on the caller's path) against
appevents' ``binding``, ``batch`` and ``pubsub`` modes, with the sidecar stand-in running in another process.

For each variant: the caller's cost per event (µs spent in the publishing loop) and delivered events/s (first
publish to last event acknowledged by the sidecar), and both as ratios against the seed-style baseline measured
in the same run.

    .venv/bin/python bench/dapr_throughput.py [--events 50000] [--seed-events 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIDECAR_SCRIPT = ROOT / "tests" / "support" / "dapr_sidecar.py"

from appevents import AppEventsSettings, Event, EventStore, configure  # noqa: E402
from appevents_exporter_dapr import DaprExporter, DaprExporterSettings, DaprMode  # noqa: E402


@dataclass
class Result:
    name: str
    events: int
    #: Wall time of the publishing loop per event: includes the GIL time background threads take meanwhile.
    caller_us: float
    #: Median of individually timed calls: what one publish costs the calling code.
    call_median_us: float
    delivered: int
    events_per_s: float


def timed_calls(calls: list[Any]) -> tuple[float, float]:
    """Run the calls; (total seconds, median µs per call)."""
    clock = time.perf_counter_ns
    durations = []
    start = time.perf_counter()
    for call in calls:
        began = clock()
        call()
        durations.append(clock() - began)
    total = time.perf_counter() - start
    durations.sort()
    return total, durations[len(durations) // 2] / 1000


def sample_event(n: int) -> Event:
    # About the size the design notes measured with (324 bytes of JSON before enrichment).
    return Event(
        event_type="data.batch_processed",
        data={"batch_id": f"batch-{n}", "records_processed": 10000, "success_count": 9995, "error_count": 5},
    )


class SidecarProcess:
    """The stand-in sidecar in a child process (so its gRPC server does not share our GIL)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SIDECAR_SCRIPT),
                "--component",
                "eventstore=bindings.noop",
                "--component",
                "events=pubsub.noop",
                "--counting",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"sidecar stand-in did not start: {line!r}")
        self.grpc_port, self.http_port = int(line[1]), int(line[2])

    def env(self) -> dict[str, str]:
        return {
            "DAPR_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            "DAPR_HTTP_ENDPOINT": f"http://127.0.0.1:{self.http_port}",
        }

    def counters(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/stats", timeout=5) as response:
            counters: dict[str, int] = json.loads(response.read())
            return counters

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def seed_style(count: int) -> Result:
    """What the seed does per event: enrich, serialise, then a blocking invoke_binding on the caller's path."""
    from dapr.clients import DaprClient

    events = [sample_event(n) for n in range(count)]
    metadata = {"Content-Type": "application/json"}
    with DaprClient() as client:
        client.invoke_binding("eventstore", "create", sample_event(-1).model_dump_json(), metadata)  # warm up

        def seed_publish(event: Event) -> None:
            EventStore.enrich_event_metadata(event)
            client.invoke_binding("eventstore", "create", event.model_dump_json(), metadata)

        elapsed, median = timed_calls([partial(seed_publish, event) for event in events])
    return Result("seed-style (sync per event)", count, elapsed / count * 1e6, median, count, count / elapsed)


def appevents_mode(mode: str, count: int, sidecar: SidecarProcess) -> Result:
    os.environ["APPEVENTS_DAPR_MODE"] = mode
    # The queue must hold a whole burst of `count` events while the slower modes drain it.
    pipeline = configure(AppEventsSettings(exporters=["dapr"], max_queue_size=max(20_000, 2 * count)))
    exporter = pipeline.processors["dapr"].exporter
    assert isinstance(exporter, DaprExporter)
    EventStore.publish(sample_event(-1))  # warm up: creates the Dapr client, probes the component
    EventStore.flush_sync(30)
    before = exporter.stats().delivered
    events = [sample_event(n) for n in range(count)]
    start = time.perf_counter()
    caller, median = timed_calls([partial(EventStore.publish, event) for event in events])
    drained = EventStore.flush_sync(timeout_s=600)
    elapsed = time.perf_counter() - start
    stats = exporter.stats()
    EventStore.shutdown()
    delivered = stats.delivered - before
    if not drained or delivered != count or stats.failed:
        print(f"  !! {mode}: drained={drained} delivered={delivered}/{count} stats={stats}")
    return Result(f"appevents {mode}", count, caller / count * 1e6, median, delivered, delivered / elapsed)


class _Capture:
    """A log record processor that keeps the records, to feed the exporter directly."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def on_emit(self, log_record: Any) -> None:
        self.records.append(log_record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def exporter_alone(mode: str, count: int) -> float:
    """Events/s one exporter delivers from ready-made records, batches of 512, nobody publishing meanwhile."""
    capture = _Capture()
    configure(AppEventsSettings(exporters=[]), processors=[capture])
    for n in range(count):
        EventStore.publish(sample_event(n))
    EventStore.shutdown()
    exporter = DaprExporter(DaprExporterSettings(mode=DaprMode(mode), pubsub="events"), header_provider=None)
    exporter.export(capture.records[:1])
    start = time.perf_counter()
    for at in range(0, count, 512):
        exporter.export(capture.records[at : at + 512])
    elapsed = time.perf_counter() - start
    delivered = exporter.stats().delivered - 1
    exporter.shutdown()
    return delivered / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument(
        "--seed-events", type=int, default=None, help="events for the seed-style run (default: --events)"
    )
    args = parser.parse_args()
    sidecar = SidecarProcess()
    try:
        os.environ.update(sidecar.env())
        for name in ("APPEVENTS_AUTH_TOKEN_URL", "APPEVENTS_AUTH_CLIENT_ID", "APPEVENTS_AUTH_CLIENT_SECRET"):
            os.environ.pop(name, None)
        os.environ["APPEVENTS_DAPR_PUBSUB"] = "events"
        configure(AppEventsSettings(exporters=[]))  # enrichment settings for the seed-style run
        baseline = seed_style(args.seed_events or args.events)
        results = [baseline] + [appevents_mode(mode, args.events, sidecar) for mode in ("binding", "batch", "pubsub")]
        alone = {mode: exporter_alone(mode, args.events) for mode in ("binding", "batch", "pubsub")}
        counters = sidecar.counters()
    finally:
        sidecar.close()

    print(f"\nDapr delivery, {args.events} events, sidecar stand-in in another process (loopback gRPC)")
    print(
        f"{'variant':<30} {'loop µs/ev':>11} {'loop x':>7} {'call median µs':>15} {'median x':>9} "
        f"{'delivered/s':>12} {'throughput x':>13}"
    )
    for r in results:
        print(
            f"{r.name:<30} {r.caller_us:>11.1f} {baseline.caller_us / r.caller_us:>6.1f}x "
            f"{r.call_median_us:>15.1f} {baseline.call_median_us / r.call_median_us:>8.1f}x "
            f"{r.events_per_s:>12,.0f} {r.events_per_s / baseline.events_per_s:>12.1f}x"
        )
    print("(loop: publishing loop wall time per event, background threads' GIL share included;")
    print(" call median: one publish as the calling code sees it)")
    print("exporter alone (records ready, caller idle):")
    for mode, rate in alone.items():
        print(f"  {mode:<8} {rate:>10,.0f} ev/s  {rate / baseline.events_per_s:>6.1f}x seed-style")
    print(f"sidecar counted: {counters}")
    print(
        "goals: caller >=50x cheaper than seed-style; batch/pubsub >=50,000 ev/s delivered; "
        "binding >=2x seed-style throughput"
    )


if __name__ == "__main__":
    main()
