"""Durable mode at its edges, measured in one run:

    .venv/bin/python bench/delivery_edges.py [--rounds 10] [--replay 500000]   (or ./dev bench delivery_edges)

1. Duplicates after kill -9: a publisher at ~4,000 events/s (40 every 10 ms, the 40th with ``wait=True``) into a
   spool with one exporter that appends every event id it is given to a file, killed with SIGKILL after 0.8 s,
   restarted ``--rounds`` times; a last run drains the orphans. Reported: events, duplicates (and their share),
   committed events never delivered (must be 0).
2. Replay: ``--replay`` events left in the spool by a closed owner, replayed by a new pipeline into a no-op
   encoded exporter: drain rate (events/s) — and, during that replay, a fresh event published every 20 ms: its
   latency from publish to the exporter, p50/p99/max (goal p99 <= 1 s), against the same fresh events with no
   replay going on (the baseline of this run).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from appevents import AppEventsSettings, Event, EventStore, configure
from appevents._spool import Spool
from appevents.exporting import EncodedEvent, ExportOutcome

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.kill_loop import kill_loop  # the same publisher the test kills


def report_kill_loop(rounds: int, workdir: Path) -> None:
    result = kill_loop(workdir, rounds)
    unique = len(set(result.delivered))
    print(
        f"kill -9 loop: {rounds} kills at ~4,000 events/s: {unique:,} events, {result.duplicates:,} duplicates "
        f"({100 * result.duplicates / max(1, unique):.2f}%, goal <= 2%), committed but never delivered: "
        f"{len(result.lost)}"
    )


class Watch:
    """A no-op encoded exporter that notes when each fresh event reached it."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.count = 0
        self.lock = threading.Lock()

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        now = time.perf_counter()
        with self.lock:
            self.count += len(batch)
            for event in batch:
                if event.event_type == "fresh.event":
                    self.seen[event.event_id] = now
        return ExportOutcome()

    def shutdown(self) -> None:
        pass


def _leave_orphan(spool: Path, count: int) -> None:
    Spool(spool, max_bytes=1 << 34, exporters=["watch"]).close()
    owner = uuid.uuid4().hex
    body = Event(event_type="replayed.event", data={"order_id": "o-1", "total": 129.5}).model_dump_json()
    db = sqlite3.connect(spool)
    with db:
        db.execute(
            "INSERT INTO owners (owner, pid, started, host, exporters, heartbeat_ns, closed)"
            " VALUES (?, 1, '', ?, 'watch', 0, 1)",
            (owner, os.uname().nodename),
        )
        db.executemany(
            "INSERT INTO events (owner, event_id, event_type, body, attributes, timestamp_ns, trace_id, span_id,"
            " trace_flags) VALUES (?, ?, 'replayed.event', ?, '{}', 0, '0', '0', 0)",
            ((owner, f"orphan-{n}", body) for n in range(count)),
        )
    db.close()


def _fresh_latencies(watch: Watch, until: float) -> list[float]:
    published: dict[str, float] = {}
    while time.perf_counter() < until:
        event = Event(event_type="fresh.event")
        published[event.event_id] = time.perf_counter()
        EventStore.publish(event)
        time.sleep(0.02)
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and any(i not in watch.seen for i in published):
        time.sleep(0.01)
    return [watch.seen[i] - t for i, t in published.items() if i in watch.seen]


def _summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {1000 * statistics.median(ordered):.1f} ms, p99 {1000 * p99:.1f} ms, max {1000 * ordered[-1]:.1f} ms "
        f"({len(ordered)} events)"
    )


def replay(count: int, workdir: Path) -> None:
    # Baseline: fresh events with nothing else going on.
    watch = Watch()
    configure(AppEventsSettings(exporters=[], spool_path=workdir / "base.db"), exporters={"watch": watch})
    baseline = _fresh_latencies(watch, time.perf_counter() + 2)
    EventStore.shutdown(10)

    spool = workdir / "replay.db"
    _leave_orphan(spool, count)
    watch = Watch()
    started = time.perf_counter()
    configure(AppEventsSettings(exporters=[], spool_path=spool), exporters={"watch": watch})
    while watch.count == 0:
        time.sleep(0.001)
    during: list[float] = []
    stop_at = [0.0]

    def publish_until_drained() -> None:
        published: dict[str, float] = {}
        while watch.count - len(watch.seen) < count:
            event = Event(event_type="fresh.event")
            published[event.event_id] = time.perf_counter()
            EventStore.publish(event)
            time.sleep(0.02)
        stop_at[0] = time.perf_counter()
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and any(i not in watch.seen for i in published):
            time.sleep(0.01)
        during.extend(watch.seen[i] - t for i, t in published.items() if i in watch.seen)

    publish_until_drained()
    drained = stop_at[0] - started
    EventStore.shutdown(10)
    print(f"replay of {count:,} spooled events: drained in {drained:.2f} s ({count / drained:,.0f} events/s)")
    print(f"fresh event latency during the replay: {_summary(during)} (goal p99 <= 1000 ms)")
    print(f"fresh event latency, no replay (baseline): {_summary(baseline)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--replay", type=int, default=500_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report_kill_loop(args.rounds, Path(tmp))
        replay(args.replay, Path(tmp))


if __name__ == "__main__":
    main()
