"""Publish → destination latency at a given rate, and the saturated throughput, in one run.

    .venv/bin/python bench/latency.py [--seconds 3] [--saturate 30000]     (or ./dev bench latency)

The Dapr sidecar stand-in (``tests/support/dapr_sidecar.py --counting --latency``, another process) takes each
event's ``sent_ns`` — the publisher's ``time.monotonic_ns()`` taken just before ``Event(...)`` and
``EventStore.publish`` — and notes, when the call reaches it, how long ago that was (CLOCK_MONOTONIC is one clock
for the whole machine). For ``binding`` (a call per event) and ``batch`` (a call per JSON array) mode, at 100, 1,000
and 10,000 events/s for ``--seconds`` each: p50, p99 and max in ms (goal p99 <= 20 ms). Then the saturated
throughput of each mode: ``--saturate`` events published as fast as one thread can, until ``flush`` returns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from appevents import AppEventsSettings, Event, EventStore, configure

ROOT = Path(__file__).resolve().parents[1]
SIDECAR_SCRIPT = ROOT / "tests" / "support" / "dapr_sidecar.py"


class Sidecar:
    def __init__(self) -> None:
        argv = [sys.executable, str(SIDECAR_SCRIPT), "--component", "eventstore=bindings.noop", "--counting"]
        self.proc = subprocess.Popen([*argv, "--latency"], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().split()
        if not ready or ready[0] != "READY":
            self.proc.kill()
            raise RuntimeError(f"the sidecar stand-in did not start: {ready!r}")
        self.grpc_port, self.http_port = int(ready[1]), int(ready[2])

    def latencies_ms(self) -> list[float]:
        url = f"http://127.0.0.1:{self.http_port}/latencies"
        with urllib.request.urlopen(url, timeout=10) as response:
            return [ns / 1e6 for ns in json.loads(response.read())["latencies_ns"]]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def at_rate(rate: int, seconds: float) -> int:
    """Publish ``rate`` events a second for ``seconds`` (in ticks of 1 ms: 10 events a tick at 10,000/s)."""
    total = int(rate * seconds)
    start = time.monotonic()
    for n in range(total):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0.0005:
            time.sleep(delay)
        sent = time.monotonic_ns()
        EventStore.publish(Event(event_type="order.received", data={"order_id": f"o-{n}", "sent_ns": sent}))
    return total


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):7.2f} ms   p99 {p99:7.2f} ms   max {ordered[-1]:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--saturate", type=int, default=30_000)
    args = parser.parse_args()
    sidecar = Sidecar()
    try:
        os.environ["DAPR_GRPC_ENDPOINT"] = f"127.0.0.1:{sidecar.grpc_port}"
        os.environ["DAPR_HTTP_ENDPOINT"] = f"http://127.0.0.1:{sidecar.http_port}"
        throughput: dict[str, float] = {}
        for mode in ("binding", "batch"):
            os.environ["APPEVENTS_DAPR_MODE"] = mode
            configure(AppEventsSettings(exporters=["dapr"]))
            at_rate(100, 0.5)  # warm-up: the Dapr client, the component check
            assert EventStore.flush_sync(30)
            sidecar.latencies_ms()
            for rate in (100, 1_000, 10_000):
                sent = at_rate(rate, args.seconds)
                assert EventStore.flush_sync(60)
                latencies = sidecar.latencies_ms()
                print(f"{mode:8s} {rate:>6,}/s  {summary(latencies)}  ({len(latencies):,} of {sent:,} events)")
            start = time.perf_counter()
            for n in range(args.saturate):
                EventStore.publish(Event(event_type="order.received", data={"order_id": f"o-{n}", "sent_ns": 0}))
            assert EventStore.flush_sync(120)
            throughput[mode] = args.saturate / (time.perf_counter() - start)
            sidecar.latencies_ms()
            stats = EventStore.stats()["dapr"]
            assert stats.accepted == stats.delivered + stats.failed + stats.dropped + stats.pending, stats
            EventStore.shutdown(10)
        for mode, rate in throughput.items():
            print(f"{mode:8s} saturated: {rate:,.0f} events/s delivered ({args.saturate:,} events)")
    finally:
        sidecar.close()


if __name__ == "__main__":
    main()
