"""Segment named without a write key: one WARNING per process (INFO was invisible by default), not one per
pipeline build."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


def test_segment_without_a_write_key_warns_once_per_process(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from appevents import AppEventsSettings, configure
        for _ in range(3):
            configure(AppEventsSettings(exporters=["segment", "memory"]))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPEVENTS_")}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30, check=True
    )
    lines = [line for line in run.stderr.splitlines() if "APPEVENTS_SEGMENT_WRITE_KEY is not set" in line]
    assert lines == [
        "appevents: Segment exporter disabled: APPEVENTS_SEGMENT_WRITE_KEY is not set (APPEVENTS_EXPORTERS names "
        "segment); lifecycle events are not sent to Segment"
    ]
