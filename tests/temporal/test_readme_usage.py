"""The README's usage block works as written: run as a script (`python usage.py`) against a real Temporal dev
server, its events land in the local log — from the activity, from workflow code, and the plugin's lifecycle
events. About 3 s (one worker process)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from appevents._demo.devserver import DevServer

README = Path(__file__).resolve().parents[2] / "README.md"


def _usage_block() -> str:
    usage = README.read_text().split("\n## Usage\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", usage, re.DOTALL)
    assert match is not None
    return match.group(1)


@pytest.mark.timeout(120)
def test_the_readme_usage_block_runs_as_written(dev_server: DevServer, tmp_path: Path) -> None:
    code = _usage_block()
    assert 'Client.connect("localhost:7233"' in code
    script = tmp_path / "usage.py"
    script.write_text(code.replace('"localhost:7233"', f'"{dev_server.address}"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPEVENTS_", "OTEL_"))}
    env["APPEVENTS_LOCAL_PATH"] = str(tmp_path / "events.db")

    run = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90
    )

    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    with sqlite3.connect(tmp_path / "events.db") as connection:
        events = [json.loads(body) for (body,) in connection.execute("SELECT body FROM events ORDER BY seq")]
    connection.close()
    seen = [(e["event_type"], e["event_name"]) for e in events if e["metadata"]["workflow_id"] == "order-o-1"]
    for expected in [
        ("workflow.lifecycle", "workflow_start"),
        ("workflow.started", None),
        ("activity.lifecycle", "activity_start"),
        ("order.received", None),
        ("activity.lifecycle", "activity_end"),
        ("workflow.completed", None),
        ("workflow.lifecycle", "workflow_end"),
    ]:
        assert expected in seen
    [received] = [e for e in events if e["event_type"] == "order.received"]
    assert received["metadata"]["activity_type"] == "process_order"
