"""The Temporal part of ``appevents demo``: its example workflows, and a clean Ctrl-C of the real command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from appevents import ApplicationEventNames, WorkflowStates
from appevents._demo.devserver import DevServer
from appevents._demo.workflow import DEMO_DATASETS, run_temporal_demo
from appevents._sqlite_log import LocalEventLog
from appevents.testing import CapturedEvents

pytestmark = pytest.mark.timeout(90)


async def test_demo_runs_the_workflows_and_publishes_their_events(
    dev_server: DevServer, captured_events: CapturedEvents
) -> None:
    ran = await run_temporal_demo(dev_server.address)

    assert ran == len(DEMO_DATASETS)
    ends = captured_events.named(ApplicationEventNames.WORKFLOW_END)
    assert Counter(e.metadata.workflow_state for e in ends) == {
        WorkflowStates.COMPLETED: 2,
        WorkflowStates.FAILED: 1,
    }
    types = Counter(e.event_type for e in captured_events)
    assert types["workflow.started"] == 3
    assert types["workflow.completed"] == 2
    assert types["workflow.failed"] == 1
    assert types["order.received"] == 2 and types["order.payment_processed"] == 2
    assert types["activity.progress"] >= 4 + 3
    [failed] = captured_events.of_type("workflow.failed")
    assert failed.metadata.workflow_id is not None and "corrupt-export" in failed.metadata.workflow_id


def _children(pid: int) -> dict[int, str]:
    """``{pid: command name}`` of the live child processes of ``pid`` (from /proc)."""
    children: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            children[int(entry.name)] = name
    return children


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _first_workflow_event_landed(path: Path) -> bool:
    if not path.exists():
        return False
    log = LocalEventLog(path)
    try:
        return any(row.event().metadata.workflow_id is not None for row in log.query())
    finally:
        log.close()


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.timeout(120)
def test_ctrl_c_mid_demo_exits_cleanly_and_stops_the_dev_server(tmp_path: Path) -> None:
    local_path = tmp_path / "demo.db"
    env = {**os.environ, "APPEVENTS_LOCAL_PATH": str(local_path)}
    env.pop("APPEVENTS_EXPORTERS", None)
    output_path = tmp_path / "demo.out"
    with output_path.open("wb") as output_file:  # a file, not a pipe: nobody reads the table while it runs
        demo = subprocess.Popen(
            [sys.executable, "-m", "appevents", "demo"],
            env=env,
            stdout=output_file,
            stderr=subprocess.STDOUT,
            # As from a terminal: SIGINT at its default, so Python turns it into KeyboardInterrupt. A test run
            # started in the background by a non-interactive shell ignores SIGINT, and a child inherits that.
            preexec_fn=_sigint_default,
        )
    servers: dict[int, str] = {}
    try:
        while not _first_workflow_event_landed(local_path):
            assert demo.poll() is None, output_path.read_text()
            time.sleep(0.05)
        servers = {pid: name for pid, name in _children(demo.pid).items() if name.startswith("temporal")}
        assert servers, f"no temporal dev server among the demo's children: {_children(demo.pid)}"

        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)

        output = output_path.read_text()
        assert demo.returncode == 0, output
        assert "interrupted" in output
        assert "Traceback" not in output
        assert [pid for pid in servers if _alive(pid)] == []
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        for pid in servers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
