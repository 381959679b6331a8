"""Overhead of AppEventsPlugin on a real Temporal dev server.

    .venv/bin/python bench/temporal_overhead.py [--workflows 300] [--rounds 5] [--watch-interval 1] [--terminations 20]

Runs N workflows x 1 activity (all started at once, then awaited) in four modes, interleaved round by round,
and reports the median worker CPU time (all threads of this process: the worker's own cost, steadier than wall time
on a shared machine) and the median wall time of each, with their ratios to the no-plugin baseline measured in
the same run:

- ``no plugin``: the bare workflow;
- ``AppEventsPlugin``: the same workflow on a worker with the plugin (workflow_start/end, activity_start/end per run
  published from the interceptor, delivered to the local SQLite sink), its closed-run watcher querying every
  ``--watch-interval`` seconds (default 1 s: ten times the default rate, an upper bound of its cost);
- ``plugin, no watcher``: the same with ``TemporalSettings(watch=False)``;
- ``activity-per-event``: no plugin; workflow started/completed events published through two extra activities,
  as the application-sdk ``EventStore`` does.

Goal: AppEventsPlugin <= 1.05x the baseline. The event count is what the exporters delivered (each event once,
whatever the number of pipeline stages it passed).

Then the watcher's latency: a worker with the plugin (``--watch-interval``) and ``--terminations`` waiting runs
terminated one after another at uneven moments; per run, the time from the server's close time to the moment its
``workflow_end`` was published, and the watcher's visibility queries per minute. Goal: latency <= interval + 1 s.
Last, the cost of one watcher round (one query, nothing found) in worker CPU and wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

sys.path.insert(0, str(Path(__file__).parent))

from temporal_overhead_workflows import (
    ActivityPerEventWorkflow,
    OneActivityWorkflow,
    WaitingWorkflow,
    publish_event_activity,
    work,
)

from appevents import AppEventsSettings, EventStore, configure
from appevents._demo.devserver import DevServer
from appevents._records import event_from_record
from appevents.temporal import AppEventsPlugin, ClosedRunWatcher, TemporalSettings
from appevents.temporal._plugin import PASSTHROUGH_MODULES

# Without the plugin the sandbox must still share appevents with the process (publish_event_activity uses it).
_PASSTHROUGH = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
)
MODES = ("no plugin", "AppEventsPlugin", "plugin, no watcher", "activity-per-event")


class _PublishTimes(LogRecordProcessor):
    """When each workflow_end was published (wall clock, the server's clock on this machine)."""

    def __init__(self) -> None:
        self.published: dict[str, float] = {}
        self._lock = threading.Lock()

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        now = time.time()
        event = event_from_record(log_record)
        if event is not None and event.event_name == "workflow_end" and event.metadata.workflow_id:
            with self._lock:
                self.published.setdefault(event.metadata.workflow_id, now)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _options(mode: str, watch_interval_s: float) -> dict[str, Any]:
    if mode == "AppEventsPlugin":
        return {"plugins": [AppEventsPlugin(settings=TemporalSettings(watch_interval_s=watch_interval_s))]}
    if mode == "plugin, no watcher":
        return {"plugins": [AppEventsPlugin(settings=TemporalSettings(watch=False))]}
    return {"workflow_runner": _PASSTHROUGH}


async def _run_mode(client: Client, mode: str, workflows: int, watch_interval_s: float) -> tuple[float, float]:
    """Wall and worker-process CPU seconds from the first start to the last result."""
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    workflow: Any = ActivityPerEventWorkflow.run if mode == "activity-per-event" else OneActivityWorkflow.run
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[OneActivityWorkflow, ActivityPerEventWorkflow],
        activities=[work, publish_event_activity],
        **_options(mode, watch_interval_s),
    ):
        started = time.perf_counter()
        cpu_started = time.process_time()
        handles = await asyncio.gather(
            *(
                client.start_workflow(workflow, i, id=f"{task_queue}-{i}", task_queue=task_queue)
                for i in range(workflows)
            )
        )
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    assert results == [2 * i for i in range(workflows)]
    return elapsed, cpu


async def _watch_latency(
    client: Client, terminations: int, watch_interval_s: float, stamps: _PublishTimes
) -> tuple[list[float], float]:
    """Seconds from each terminated run's close (server time) to its workflow_end, and queries per minute."""
    task_queue = f"watch-{uuid.uuid4().hex[:8]}"
    plugin = AppEventsPlugin(settings=TemporalSettings(watch_interval_s=watch_interval_s))
    async with Worker(client, task_queue=task_queue, workflows=[WaitingWorkflow], plugins=[plugin]) as worker:
        watching_since = time.monotonic()
        handles = [
            await client.start_workflow(WaitingWorkflow.run, id=f"{task_queue}-{i}", task_queue=task_queue)
            for i in range(terminations)
        ]
        for i, handle in enumerate(handles):
            # Uneven moments, so the closes fall at different points of the watcher's interval.
            await asyncio.sleep(watch_interval_s * ((i * 0.37) % 1.0))
            await handle.terminate(reason="latency measurement")
        async with asyncio.timeout(watch_interval_s * 5 + 30):
            while not all(h.id in stamps.published for h in handles):  # noqa: ASYNC110 - published on other threads
                await asyncio.sleep(0.01)
        per_minute = plugin.watchers[worker].queries / ((time.monotonic() - watching_since) / 60)
    latencies = []
    for handle in handles:
        closed = (await handle.describe()).close_time
        assert closed is not None
        latencies.append(stamps.published[handle.id] - closed.timestamp())
    return latencies, per_minute


async def _query_cost(client: Client, polls: int = 50) -> tuple[float, float]:
    """CPU and wall milliseconds of one watcher round (one task queue: one visibility query), on average."""
    watcher = ClosedRunWatcher(client, [f"idle-{uuid.uuid4().hex[:8]}"])
    await watcher.poll()  # the first one opens the way
    cpu_started, started = time.process_time(), time.perf_counter()
    for _ in range(polls):
        await watcher.poll()
    return (time.process_time() - cpu_started) * 1000 / polls, (time.perf_counter() - started) * 1000 / polls


def _exported() -> int:
    """Events the exporters delivered so far (the ``emitter`` stage hands the same events on: not counted)."""
    return sum(s.exported for name, s in EventStore.stats().items() if name != "emitter")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--watch-interval", type=float, default=1.0, help="the watcher's interval (s)")
    parser.add_argument("--terminations", type=int, default=20, help="runs terminated for the latency (0: none)")
    args = parser.parse_args()

    stamps = _PublishTimes()
    with tempfile.TemporaryDirectory() as tmp, DevServer() as server:
        settings = AppEventsSettings(exporters=["local"], local_path=Path(tmp) / "events.db")
        configure(settings)
        client = await Client.connect(server.address)
        for mode in MODES:  # warm up: sandbox imports, server task queues, SQLite
            await _run_mode(client, mode, 20, args.watch_interval)
        exported_before = _exported()
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                wall_s, cpu_s = await _run_mode(client, mode, args.workflows, args.watch_interval)
                times[mode].append(wall_s)
                cpu[mode].append(cpu_s)
        await EventStore.flush()
        exported = _exported() - exported_before
        # The publish-time stamps only for this part: decoding every event would weigh on the measured rounds.
        configure(settings, processors=[stamps])
        latencies, per_minute = (
            await _watch_latency(client, args.terminations, args.watch_interval, stamps)
            if args.terminations
            else ([], 0.0)
        )
        query_cpu_ms, query_wall_ms = await _query_cost(client)
        EventStore.shutdown()

    baseline = statistics.median(times["no plugin"])
    cpu_baseline = statistics.median(cpu["no plugin"])
    print(
        f"{args.workflows} workflows x 1 activity, {args.rounds} rounds, median per mode, dev server {server.address}"
    )
    for mode in MODES:
        cpu_median = statistics.median(cpu[mode])
        median = statistics.median(times[mode])
        runs = ", ".join(f"{t:.2f}" for t in cpu[mode])
        print(
            f"  {mode:<18} worker cpu {cpu_median:5.2f} s  {cpu_median / cpu_baseline:5.3f}x   "
            f"wall {median:6.2f} s  {median / baseline:5.3f}x  {args.workflows / median:6.1f} wf/s   "
            f"(cpu runs: {runs})"
        )
    print(f"  events exported by the pipeline during the measured rounds: {exported}")
    if latencies:
        print(
            f"closed-run watcher, interval {args.watch_interval} s: {len(latencies)} terminated runs, server close to "
            f"workflow_end median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s; "
            f"{per_minute:.1f} visibility queries/min (one task queue)"
        )
    print(f"one watcher round (one visibility query): {query_cpu_ms:.2f} ms worker cpu, {query_wall_ms:.2f} ms wall")


if __name__ == "__main__":
    asyncio.run(main())
