"""Overhead of AppEventsPlugin on a real Temporal dev server.

    .venv/bin/python bench/temporal_overhead.py [--workflows 300] [--rounds 5]

Runs N workflows x 1 activity (all started at once, then awaited) in three modes, interleaved round by round,
and reports the median worker CPU time (all threads of this process: the worker's own cost, steadier than wall time
on a shared machine) and the median wall time of each, with their ratios to the no-plugin baseline measured in
the same run:

- ``no plugin``: the bare workflow;
- ``AppEventsPlugin``: the same workflow on a worker with the plugin (workflow_start/end, activity_start/end per run
  published from the interceptor, delivered to the local SQLite sink);
- ``activity-per-event``: no plugin; workflow started/completed events published through two extra activities,
  as the application-sdk ``EventStore`` does.

Goal: AppEventsPlugin <= 1.05x the baseline. The event count is what the exporters delivered (each event once,
whatever the number of pipeline stages it passed).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

sys.path.insert(0, str(Path(__file__).parent))

from temporal_overhead_workflows import (
    ActivityPerEventWorkflow,
    OneActivityWorkflow,
    publish_event_activity,
    work,
)

from appevents import AppEventsSettings, EventStore, configure
from appevents._demo.devserver import DevServer
from appevents.temporal import AppEventsPlugin
from appevents.temporal._plugin import PASSTHROUGH_MODULES

# Without the plugin the sandbox must still share appevents with the process (publish_event_activity uses it).
_PASSTHROUGH = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
)
MODES = ("no plugin", "AppEventsPlugin", "activity-per-event")


async def _run_mode(client: Client, mode: str, workflows: int) -> tuple[float, float]:
    """Wall and worker-process CPU seconds from the first start to the last result."""
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    workflow: Any = ActivityPerEventWorkflow.run if mode == "activity-per-event" else OneActivityWorkflow.run
    options: dict[str, Any] = (
        {"plugins": [AppEventsPlugin()]} if mode == "AppEventsPlugin" else {"workflow_runner": _PASSTHROUGH}
    )
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[OneActivityWorkflow, ActivityPerEventWorkflow],
        activities=[work, publish_event_activity],
        **options,
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


def _exported() -> int:
    """Events the exporters delivered so far (the ``emitter`` stage hands the same events on: not counted)."""
    return sum(s.exported for name, s in EventStore.stats().items() if name != "emitter")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, DevServer() as server:
        configure(AppEventsSettings(exporters=["local"], local_path=Path(tmp) / "events.db"))
        client = await Client.connect(server.address)
        for mode in MODES:  # warm up: sandbox imports, server task queues, SQLite
            await _run_mode(client, mode, 20)
        exported_before = _exported()
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                wall_s, cpu_s = await _run_mode(client, mode, args.workflows)
                times[mode].append(wall_s)
                cpu[mode].append(cpu_s)
        await EventStore.flush()
        exported = _exported() - exported_before
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


if __name__ == "__main__":
    asyncio.run(main())
