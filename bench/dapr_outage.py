"""A Dapr sidecar outage under load: garbage-collection pauses, gRPC calls and the slowest publish, with the Dapr
exporter as it is (after an attempt that settled nothing, the next one sends one event before the rest) against
the same exporter resending every pending event on every attempt, in one run.

    .venv/bin/python bench/dapr_outage.py [--rate 4000] [--seconds 12] [--down 2:10] [--rounds 2]

Each variant runs in its own process (fresh interpreter, fresh garbage collector): ``--rate`` events/s published
with ``EventStore.publish`` for ``--seconds`` s, binding mode, best effort, retry window 2 s; the sidecar stand-in
(``tests/support/dapr_sidecar.py``, a separate process) is SIGKILLed at the first ``--down`` second and started
again on the same ports at the second. Measured in the publishing process: full (generation 2) collections, their
count, longest and total time (``gc.callbacks``); all collections' total time; the longest ``publish`` call; the
gRPC calls the exporter made; and where the events went (delivered / failed / dropped of accepted). Variants are
interleaved over ``--rounds`` rounds; the medians are reported with the ratio probe / resend-all.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIDECAR_SCRIPT = ROOT / "tests" / "support" / "dapr_sidecar.py"
VARIANTS = ("probe first (as shipped)", "resend all pending (baseline)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sidecar:
    def __init__(self) -> None:
        self.grpc_port, self.http_port = _free_port(), _free_port()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [sys.executable, str(SIDECAR_SCRIPT), "--component", "eventstore=bindings.noop", "--counting"]
        command += ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().startswith("READY")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def run_variant(probe: bool, rate: int, seconds: float, down_at: float, up_at: float) -> dict[str, Any]:
    """One variant, in this (child) process."""
    sidecar = Sidecar()
    sidecar.start()
    os.environ.update(
        {
            "DAPR_GRPC_PORT": str(sidecar.grpc_port),
            "DAPR_HTTP_PORT": str(sidecar.http_port),
            "APPEVENTS_EXPORTERS": "dapr",
            "APPEVENTS_DAPR_MODE": "binding",
            "APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S": "2",
            "APPEVENTS_DAPR_RETRY_INITIAL_BACKOFF_S": "0.05",
            "APPEVENTS_DAPR_RETRY_MAX_BACKOFF_S": "0.5",
        }
    )
    from appevents import Event, EventStore, configure
    from appevents_exporter_dapr import DaprExporter

    if not probe:  # the baseline: every attempt sends every pending event
        DaprExporter._probe_first = lambda self, events, outcome: self._dispatcher.attempt(events, outcome)  # type: ignore[method-assign]

    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    pipeline = configure()  # from the environment above
    exporter = pipeline.exporter("dapr")
    assert isinstance(exporter, DaprExporter)
    EventStore.publish(Event(event_type="warm.up", data={}))
    EventStore.flush_sync(10)
    gc.callbacks.append(on_gc)
    total = int(rate * seconds)
    t0 = time.perf_counter()
    worst = 0.0
    killed = restarted = False
    try:
        for n in range(total):
            target = t0 + n / rate
            now = time.perf_counter()
            if target > now:
                time.sleep(target - now)
            if not killed and now - t0 >= down_at:
                sidecar.kill()
                killed = True
            if killed and not restarted and now - t0 >= up_at:
                sidecar.start()
                restarted = True
            before = time.perf_counter()
            EventStore.publish(Event(event_type="order.received", data={"n": n}))
            worst = max(worst, time.perf_counter() - before)
        EventStore.flush_sync(30)
    finally:
        gc.callbacks.remove(on_gc)
    stats = EventStore.stats()["dapr"]
    calls = exporter.stats().calls
    EventStore.shutdown(10)
    sidecar.kill()
    full = pauses[2]
    return {
        "gen2": len(full),
        "gen2_longest_ms": 1000 * max(full, default=0.0),
        "gen2_total_ms": 1000 * sum(full),
        "gc_total_ms": 1000 * sum(sum(v) for v in pauses.values()),
        "worst_publish_ms": 1000 * worst,
        "calls": calls,
        "delivered": stats.delivered,
        "failed": stats.failed,
        "dropped": stats.dropped,
        "accepted": stats.accepted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--down", default="2:10", help="FROM:TO seconds the sidecar is down")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["probe", "all"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    down_at, up_at = (float(x) for x in args.down.split(":"))
    if args.child:
        result = run_variant(args.child == "probe", args.rate, args.seconds, down_at, up_at)
        print(json.dumps(result))
        return

    print(f"{args.rate} events/s for {args.seconds:g} s, sidecar down from {down_at:g} s to {up_at:g} s; binding mode,")
    print(f"retry window 2 s; {args.rounds} round(s), variants interleaved, each in its own process; medians")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, child in zip(VARIANTS, ("probe", "all"), strict=True):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    child,
                    "--rate",
                    str(args.rate),
                    "--seconds",
                    str(args.seconds),
                    "--down",
                    args.down,
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=args.seconds + 120,
            )
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    columns = [
        ("gen2", "full GCs"),
        ("gen2_longest_ms", "longest ms"),
        ("gen2_total_ms", "full GC ms"),
        ("gc_total_ms", "all GC ms"),
        ("worst_publish_ms", "slowest publish ms"),
        ("calls", "gRPC calls"),
    ]
    print(f"{'variant':34}" + "".join(f"{title:>20}" for _, title in columns))
    medians: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        medians[name] = {key: statistics.median(r[key] for r in runs) for key, _ in columns}
        print(f"{name:34}" + "".join(f"{medians[name][key]:>20,.1f}" for key, _ in columns))
    probe, baseline = (medians[name] for name in VARIANTS)
    print(
        "ratio probe / resend-all:         "
        + "".join(f"{(probe[key] / baseline[key] if baseline[key] else float('nan')):>20.2f}" for key, _ in columns)
    )
    for name, runs in results.items():
        for r in runs:
            print(
                f"  {name}: delivered {r['delivered']:,}, failed {r['failed']:,}, dropped {r['dropped']:,} "
                f"of {r['accepted']:,} accepted"
            )


if __name__ == "__main__":
    main()
