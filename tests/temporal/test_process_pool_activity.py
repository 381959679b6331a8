"""CPU-bound activities in a ``ProcessPoolExecutor`` (Temporal's documented way, as in samples-python's
``hello_activity_multiprocess``): an event published inside such an activity arrives, and no pool process warns
about events that were its parent's.

The worker app runs in a child interpreter against the session's dev server, as a new user would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appevents._demo.devserver import DevServer
from appevents._sqlite_log import LocalEventLog

APP = textwrap.dedent(
    """
    import asyncio, multiprocessing, os, sys, uuid
    from concurrent.futures import ProcessPoolExecutor
    from datetime import timedelta

    from temporalio import activity, workflow
    from temporalio.client import Client
    from temporalio.worker import SharedStateManager, UnsandboxedWorkflowRunner, Worker

    from appevents import Event, EventStore
    from appevents.temporal import AppEventsPlugin


    @activity.defn
    def crunch(n: int) -> int:
        EventStore.publish(Event(event_type="crunch.done", data={"n": n, "pid": os.getpid()}))
        return n * 2


    @workflow.defn
    class CrunchWorkflow:
        @workflow.run
        async def run(self, n: int) -> int:
            return await workflow.execute_activity(crunch, n, start_to_close_timeout=timedelta(seconds=30))


    async def main() -> None:
        client = await Client.connect(sys.argv[1], plugins=[AppEventsPlugin()])
        queue = f"pool-{uuid.uuid4()}"
        with ProcessPoolExecutor(2) as pool:
            worker = Worker(
                client,
                task_queue=queue,
                workflows=[CrunchWorkflow],
                activities=[crunch],
                activity_executor=pool,
                shared_state_manager=SharedStateManager.create_from_multiprocessing(multiprocessing.Manager()),
                workflow_runner=UnsandboxedWorkflowRunner(),
            )
            async with worker:
                for n in range(3):
                    # Published by the worker process while the pool's processes may be forking from it.
                    EventStore.publish(Event(event_type="parent.note", data={"n": n}))
                    wf_id = f"wf-{uuid.uuid4()}"
                    result = await client.execute_workflow(CrunchWorkflow.run, n, id=wf_id, task_queue=queue)
                    assert result == n * 2
        print("main-pid", os.getpid(), flush=True)


    asyncio.run(main())
    """
)


@pytest.mark.timeout(120)
def test_an_event_published_in_a_process_pool_activity_is_delivered_and_no_pool_process_warns(
    dev_server: DevServer, tmp_path: Path
) -> None:
    log_path = tmp_path / "events.db"
    env = {**os.environ, "APPEVENTS_EXPORTERS": "local", "APPEVENTS_LOCAL_PATH": str(log_path)}
    result = subprocess.run(
        [sys.executable, "-c", APP, dev_server.address], env=env, capture_output=True, text=True, timeout=110
    )
    assert result.returncode == 0, result.stderr
    assert "did not deliver" not in result.stderr and "still being built" not in result.stderr, result.stderr
    main_pid = int(result.stdout.split("main-pid")[1].split()[0])
    events = [stored.event() for stored in LocalEventLog(log_path).query()]
    crunched = [e for e in events if e.event_type == "crunch.done"]
    assert sorted(int(str(e.data["n"])) for e in crunched) == [0, 1, 2]
    assert all(e.data["pid"] != main_pid for e in crunched), "published in the pool's processes"
    assert all(e.metadata.activity_type == "crunch" and e.metadata.workflow_id for e in crunched)
    assert sorted(int(str(e.data["n"])) for e in events if e.event_type == "parent.note") == [0, 1, 2]
    ends = [e for e in events if e.event_name == "activity_end"]
    assert len(ends) == 3, "the worker's lifecycle events, once each"


CANCELLED_APP = textwrap.dedent(
    """
    import asyncio, multiprocessing, sys, time, uuid
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from datetime import timedelta

    from temporalio import activity, workflow
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.worker import SharedStateManager, UnsandboxedWorkflowRunner, Worker

    from appevents.temporal import AppEventsPlugin


    @activity.defn
    def grind(seconds: float) -> str:
        # Heartbeats (so the worker hears of the cancellation) but never checks for it: runs to its end.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            activity.heartbeat()
            time.sleep(0.05)
        print("ground", flush=True)
        return "ground"


    @workflow.defn
    class GrindWorkflow:
        @workflow.run
        async def run(self) -> str:
            return await workflow.execute_activity(
                grind, 3.0, start_to_close_timeout=timedelta(seconds=30), heartbeat_timeout=timedelta(seconds=1)
            )


    async def main(address: str, kind: str) -> None:
        client = await Client.connect(address, plugins=[AppEventsPlugin()])
        queue = f"cancel-{uuid.uuid4()}"
        process = kind == "process"
        options = (
            {"shared_state_manager": SharedStateManager.create_from_multiprocessing(multiprocessing.Manager())}
            if process
            else {}
        )
        with ProcessPoolExecutor(1) if process else ThreadPoolExecutor(1) as pool:
            worker = Worker(
                client,
                task_queue=queue,
                workflows=[GrindWorkflow],
                activities=[grind],
                activity_executor=pool,
                workflow_runner=UnsandboxedWorkflowRunner(),
                **options,
            )
            async with worker:
                handle = await client.start_workflow(GrindWorkflow.run, id=f"wf-{uuid.uuid4()}", task_queue=queue)
                while not (await handle.describe()).raw_description.pending_activities:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
                await handle.cancel()
                try:
                    await handle.result()
                except WorkflowFailureError:
                    print("cancelled", flush=True)
                await asyncio.sleep(3.5)  # the activity runs on to its end, then the worker reports it


    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("executor", "outcome"), [("process", "completed"), ("thread", "cancelled")])
def test_an_activity_whose_workflow_was_cancelled_reports_that_the_server_refused_its_outcome(
    dev_server: DevServer, tmp_path: Path, executor: str, outcome: str
) -> None:
    log_path = tmp_path / "events.db"
    env = {**os.environ, "APPEVENTS_EXPORTERS": "local", "APPEVENTS_LOCAL_PATH": str(log_path)}
    result = subprocess.run(
        [sys.executable, "-c", CANCELLED_APP, dev_server.address, executor],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stderr
    assert "cancelled" in result.stdout
    if executor == "process":
        assert "ground" in result.stdout, "a sync activity in a process pool runs to its end"
    [end] = [e for e in (s.event() for s in LocalEventLog(log_path).query()) if e.event_name == "activity_end"]
    # The workflow closed cancelled; the server no longer knew the attempt and refused what the function did.
    assert end.data["status"] == "completion_refused"
    assert end.data["outcome"] == outcome
    assert end.data["cancellation_reasons"] == ["not_found"]
    [workflow_end] = [e for e in (s.event() for s in LocalEventLog(log_path).query()) if e.event_name == "workflow_end"]
    assert workflow_end.metadata.workflow_state == "cancelled"
