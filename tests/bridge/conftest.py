"""Fixtures for the bridge tests: the real ``appevents bridge`` command in a subprocess, delivering to the Dapr
sidecar stand-in (``eventstore`` binding, batch mode → an HTTP receiver)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.bridge_process import TOKEN, BridgeProcess
from support.dapr_sidecar import DaprSidecar, HttpReceiver


@pytest.fixture
def sidecar(receiver: HttpReceiver) -> Iterator[DaprSidecar]:
    sidecar = DaprSidecar().start()
    sidecar.register("eventstore", "bindings.http", receiver.url)
    yield sidecar
    sidecar.stop()


@pytest.fixture
def bridge_env(sidecar: DaprSidecar, tmp_path: Path) -> dict[str, str]:
    """The environment of a bridge delivering to ``sidecar`` (batch mode: one binding call per batch)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPEVENTS_", "OTEL_", "DAPR_"))}
    env.update(sidecar.env())
    env.update(
        {
            "APPEVENTS_EXPORTERS": "dapr",
            "APPEVENTS_DAPR_MODE": "batch",
            "APPEVENTS_BRIDGE_TOKEN": TOKEN,
            "APPEVENTS_LOCAL_PATH": str(tmp_path / "events.db"),
            "APPEVENTS_DAPR_RETRY_INITIAL_BACKOFF_S": "0.05",
            "APPEVENTS_DAPR_RETRY_MAX_BACKOFF_S": "0.5",
            "APPEVENTS_DAPR_HEALTH_PROBE_TIMEOUT_S": "0.5",
            "APPEVENTS_SCHEDULE_DELAY_MS": "20",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def start_bridge(bridge_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., BridgeProcess]]:
    started: list[BridgeProcess] = []

    def start(*args: str, host: str = "127.0.0.1", **extra: str) -> BridgeProcess:
        """A bridge with ``bridge_env`` plus ``extra`` variables (an empty value unsets one), listening on ``host``."""
        env = {name: value for name, value in {**bridge_env, **extra}.items() if value != ""}
        bridge = BridgeProcess(env, tmp_path / f"bridge-{len(started)}.log", host=host, extra_args=args)
        started.append(bridge)
        return bridge.start()

    yield start
    for bridge in started:
        bridge.kill()
        assert TOKEN not in bridge.log(), "the bridge token was written to the log"
