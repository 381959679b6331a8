"""``appevents temporal watch`` as a user runs it: a process of its own beside workers that do not watch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from appevents import WorkflowStates
from appevents._demo.devserver import DevServer
from appevents._sqlite_log import LocalEventLog
from appevents.temporal._lifecycle import workflow_end_event_id
from temporal.workflows import WaitingWorkflow

pytestmark = pytest.mark.timeout(60)


async def test_the_watch_command_publishes_workflow_end_of_a_terminated_run_and_stops_on_sigterm(
    dev_server: DevServer, client: Client, task_queue: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "events.db"
    env = {**os.environ, "APPEVENTS_EXPORTERS": "local", "APPEVENTS_LOCAL_PATH": str(log_path)}
    env.pop("TEMPORAL_ADDRESS", None)
    command = [sys.executable, "-m", "appevents", "temporal", "watch", "--address", dev_server.address]
    command += ["--task-queue", task_queue, "--interval", "0.2"]
    watcher = await asyncio.create_subprocess_exec(*command, env=env, stderr=asyncio.subprocess.PIPE)
    try:
        workflow_id = f"watched-{uuid.uuid4()}"
        handle = await client.start_workflow(WaitingWorkflow.run, id=workflow_id, task_queue=task_queue)
        await handle.terminate(reason="watched from outside")
        async with asyncio.timeout(30):
            # The log is written by another process: nothing to await but the file.
            while not (log_path.exists() and LocalEventLog(log_path).query(workflow_id=workflow_id)):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        watcher.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _, stderr_bytes = await watcher.communicate()
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()
    stderr = stderr_bytes.decode()
    assert watcher.returncode == 0, stderr
    assert "watching namespace 'default'" in stderr
    [stored] = LocalEventLog(log_path).query(workflow_id=workflow_id)
    end = stored.event()
    assert end.event_name == "workflow_end"
    assert end.metadata.workflow_state == WorkflowStates.TERMINATED
    assert end.event_id == workflow_end_event_id("default", str(handle.result_run_id))
    assert end.data["reason"] == "watched from outside"


def _failed_watch(tmp_path: Path, *args: str, **env: str) -> str:
    """Run ``appevents temporal watch ARGS`` expecting exit status 2 and no traceback; its stderr."""
    environ = {**os.environ, "APPEVENTS_LOCAL_PATH": str(tmp_path / "events.db"), **env}
    command = [sys.executable, "-m", "appevents", "temporal", "watch", *args]
    result = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=50)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_the_watch_command_names_a_server_it_cannot_reach(tmp_path: Path) -> None:
    stderr = _failed_watch(tmp_path, "--address", "127.0.0.1:1", "--task-queue", "q")
    assert "cannot connect to Temporal at 127.0.0.1:1" in stderr


def test_the_watch_command_names_bad_settings(tmp_path: Path) -> None:
    stderr = _failed_watch(tmp_path, "--task-queue", "q", APPEVENTS_TEMPORAL_WATCH_INTERVAL_S="-1")
    assert "bad APPEVENTS_TEMPORAL_* settings: watch_interval_s: Input should be greater than 0" in stderr
