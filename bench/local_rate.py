"""The ``local`` exporter (the SQLite event log) against a tight publish loop: how fast it sustains delivery, and
whether it keeps up with a steady 20,000 events/s — measured in one run.

    .venv/bin/python bench/local_rate.py [--events 1000000] [--rate 20000] [--seconds 10]

(i) Burst: ``EventStore.publish(Event(...))`` (construction included) ``--events`` times as fast as the loop goes,
    with the default ``APPEVENTS_MAX_QUEUE_SIZE``; then ``EventStore.flush_sync``. Reports the publishing loop's
    rate, the delivered rate (delivered events / time from the first publish until the flush returned),
    delivered/dropped/pending from ``EventStore.stats()`` after the flush, and the peak RSS growth of the process
    during the burst (``VmHWM`` reset through ``/proc/self/clear_refs`` before it, minus ``VmRSS`` before it;
    ``ru_maxrss`` where that is not available). Events dropped here are the queue doing its job (bounded memory
    under a burst the destination cannot absorb): they are counted, never silent.
(ii) Paced: ``--rate`` events/s for ``--seconds`` s (published in small bursts on a 1 ms tick), then a flush.
    Goal: keeps up — nothing dropped, the backlog (pending, sampled every 100 ms) stays bounded, and the final
    flush is quick.

Both parts start from an empty event log in a temp dir. The ratio printed is delivered rate / publishing loop rate.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from appevents import AppEventsSettings, DeliveryStats, Event, EventStore, configure

EVENTS = 1_000_000
RATE = 20_000
SECONDS = 10.0


def event(n: int) -> Event:
    return Event(
        event_type="order.received",
        data={"order_id": f"order-{n}", "customer_id": "cust-42", "total_amount": 129.5, "item_count": 3},
    )


def load() -> str:
    """The machine's load average against its CPUs: the figures mean little on a machine busy with other work."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def thread_cpu_s(native_id: int | None) -> float:
    """CPU time (user + system) of one thread of this process, from /proc; 0 where unavailable."""
    if native_id is None:
        return 0.0
    try:
        with open(f"/proc/self/task/{native_id}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exporter_thread_id() -> int | None:
    """Native id of the ``local`` exporter's engine thread (named ``appevents-local``)."""
    return next((t.native_id for t in threading.enumerate() if t.name == "appevents-local"), None)


def use_local(path: Path) -> int:
    """Configure the ``local`` exporter at ``path``, every other setting from the environment / defaults."""
    settings = AppEventsSettings(exporters=["local"], local_path=path)
    configure(settings)
    EventStore.publish(event(-1))  # warm up: opens the log on the exporter thread
    EventStore.flush_sync(30)
    return settings.max_queue_size


def show(stats: DeliveryStats) -> str:
    identity = stats.accepted == stats.delivered + stats.failed + stats.dropped + stats.pending
    text = (
        f"accepted={stats.accepted:,} delivered={stats.delivered:,} failed={stats.failed:,} "
        f"dropped={stats.dropped:,} pending={stats.pending:,} (identity {'holds' if identity else 'BROKEN'})"
    )
    reasons = {**stats.failed_reasons, **stats.dropped_reasons}
    return text + (f" {reasons}" if reasons else "")


def burst(path: Path, count: int) -> None:
    queue_size = use_local(path)
    publish = EventStore.publish
    gc.collect()
    rss_before = rss_kb("VmRSS")
    peak_reset = reset_peak_rss()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    exporter_tid = exporter_thread_id()
    exporter_cpu = thread_cpu_s(exporter_tid)
    caller_cpu = time.thread_time()
    start = time.perf_counter()
    for n in range(count):
        publish(
            Event(
                event_type="order.received",
                data={"order_id": f"order-{n}", "customer_id": "cust-42", "total_amount": 129.5, "item_count": 3},
            )
        )
    loop_s = time.perf_counter() - start
    caller_cpu = time.thread_time() - caller_cpu
    exporter_cpu_in_loop = thread_cpu_s(exporter_tid) - exporter_cpu
    at_loop_end = EventStore.stats()["local"]
    drained = EventStore.flush_sync(timeout_s=600)
    total_s = time.perf_counter() - start
    stats = EventStore.stats()["local"]
    if peak_reset and rss_before is not None:
        peak = rss_kb("VmHWM") or 0
        growth = f"{(peak - rss_before) / 1024:,.1f} MiB (VmHWM {peak / 1024:,.1f} MiB - VmRSS before)"
    else:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        growth = f"{(maxrss - maxrss_before) / 1024:,.1f} MiB (ru_maxrss growth: a lower bound)"
    EventStore.shutdown()
    delivered = stats.delivered - 1  # the warm-up event
    loop_rate = count / loop_s
    delivered_rate = delivered / total_s
    print(f"(i) burst: {count:,} events, Event(...) + publish in a tight loop, max_queue_size={queue_size:,}")
    print(f"    publishing loop        {loop_s:7.2f} s  {loop_rate:>10,.0f} events/s")
    print(f"    until flush_sync ({drained}) {total_s:7.2f} s  {delivered_rate:>10,.0f} delivered/s")
    print(
        f"    CPU during the loop: caller thread {caller_cpu:.2f} s, local exporter thread "
        f"{exporter_cpu_in_loop:.2f} s (of {loop_s:.2f} s wall)"
    )
    print(f"    at the loop's end: delivered={at_loop_end.delivered - 1:,} pending={at_loop_end.pending:,}")
    print(f"    stats after flush: {show(stats)}")
    ratio = delivered_rate / loop_rate
    print(f"    delivered {delivered / count:.1%} of the burst; delivered rate / loop rate: {ratio:.2f}")
    print(f"    peak RSS growth during the burst: {growth}")


def paced(path: Path, rate: int, seconds: float) -> None:
    queue_size = use_local(path)
    publish = EventStore.publish
    stats_of = EventStore.stats
    sent = 0
    max_pending = 0
    next_sample = 0.0
    exporter_tid = exporter_thread_id()
    gc.collect()
    exporter_cpu = thread_cpu_s(exporter_tid)
    caller_cpu = time.thread_time()
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        due = min(int(elapsed * rate), int(seconds * rate))
        while sent < due:
            publish(
                Event(
                    event_type="order.received",
                    data={
                        "order_id": f"order-{sent}",
                        "customer_id": "cust-42",
                        "total_amount": 129.5,
                        "item_count": 3,
                    },
                )
            )
            sent += 1
        if elapsed >= next_sample:
            max_pending = max(max_pending, stats_of()["local"].pending)
            next_sample += 0.1
        time.sleep(0.001)
    loop_s = time.perf_counter() - start
    caller_cpu = time.thread_time() - caller_cpu
    exporter_cpu = thread_cpu_s(exporter_tid) - exporter_cpu
    flush_start = time.perf_counter()
    drained = EventStore.flush_sync(timeout_s=600)
    flush_s = time.perf_counter() - flush_start
    stats = stats_of()["local"]
    EventStore.shutdown()
    delivered = stats.delivered - 1
    target = int(seconds * rate)
    kept_up = stats.dropped == 0 and stats.failed == 0 and delivered == sent and flush_s < 1.0
    print(f"(ii) paced: {rate:,} events/s for {seconds:g} s, max_queue_size={queue_size:,}")
    print(f"    published {sent:,} in {loop_s:.2f} s = {sent / loop_s:,.0f} events/s (target {rate:,})")
    print(
        f"    CPU during the run: caller thread {caller_cpu:.2f} s ({caller_cpu / sent * 1e6:.1f} µs/event), local "
        f"exporter thread {exporter_cpu:.2f} s ({exporter_cpu / max(1, delivered) * 1e6:.1f} µs/event delivered)"
    )
    caller_us, exporter_us = caller_cpu / sent * 1e6, exporter_cpu / max(1, delivered) * 1e6
    print(
        f"    CPU needed at {rate:,}/s from those: caller {rate * caller_us / 1e4:.0f}% + exporter thread "
        f"{rate * exporter_us / 1e4:.0f}% of one core (whatever the machine's other load)"
    )
    print(f"    largest backlog seen (pending, every 100 ms): {max_pending:,}")
    print(f"    final flush_sync ({drained}): {flush_s * 1000:.0f} ms")
    print(f"    stats after flush: {show(stats)}")
    print(f"    delivered rate over the run: {delivered / (loop_s + flush_s):,.0f} events/s")
    verdict = "yes" if kept_up else "NO"
    print(f"    keeps up at {rate:,}/s (nothing dropped or failed, final flush < 1 s): {verdict}  (goal: yes)")
    if sent < 0.99 * target:
        print(f"    note: the publishing loop itself fell behind ({sent:,} of {target:,} events): the machine is busy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=EVENTS, help="events in the burst (i)")
    parser.add_argument("--rate", type=int, default=RATE, help="events/s in the paced run (ii)")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="duration of the paced run (ii)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="appevents-bench-") as tmp:
        print(f"local exporter (SQLite event log in a temp dir), one process; {load()}")
        burst(Path(tmp) / "burst.db", args.events)
        paced(Path(tmp) / "paced.db", args.rate, args.seconds)
        print(f"at the end: {load()}")


if __name__ == "__main__":
    main()
