"""However the plugin and interceptor are registered, each step is reported once."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
import temporalio
from temporalio.client import Client

from appevents import ApplicationEventNames, __version__, configure
from appevents._demo.devserver import DevServer
from appevents._settings import AppEventsSettings
from appevents.exporting import EncodedEvent, ExportOutcome
from appevents.temporal import AppEventsPlugin, EventInterceptor
from appevents.testing import CapturedEvents, InMemoryEventExporter
from temporal.support import make_worker
from temporal.workflows import CompletingWorkflow

pytestmark = [
    pytest.mark.timeout(60),
    # temporalio warns when one plugin type sits on the client and the worker; deduping it is the point here.
    pytest.mark.filterwarnings("ignore:The same plugin type:UserWarning"),
]


def _registrations() -> dict[str, tuple[dict[str, Any], list[Any], list[Any]]]:
    """name → (Client.connect options, worker plugins, worker interceptors)."""
    shared = AppEventsPlugin()
    return {
        "worker-only": ({}, [AppEventsPlugin()], []),
        "client-only": ({"plugins": [AppEventsPlugin()]}, [], []),
        "client-and-worker": ({"plugins": [AppEventsPlugin()]}, [AppEventsPlugin()], []),
        "same-instance-twice": ({"plugins": [shared]}, [shared], []),
        "interceptor-on-client-plugin-on-worker": ({"interceptors": [EventInterceptor()]}, [AppEventsPlugin()], []),
        "plugin-and-interceptor-on-worker": ({}, [AppEventsPlugin()], [EventInterceptor()]),
        "two-plugins-on-client": ({"plugins": [AppEventsPlugin(), AppEventsPlugin()]}, [], []),
        "interceptor-and-plugin-on-client": (
            {"interceptors": [EventInterceptor()], "plugins": [AppEventsPlugin()]},
            [],
            [],
        ),
    }


@pytest.mark.parametrize("registration", list(_registrations()))
async def test_each_step_is_reported_once(
    dev_server: DevServer, task_queue: str, captured_events: CapturedEvents, registration: str
) -> None:
    connect_options, worker_plugins, worker_interceptors = _registrations()[registration]
    client = await Client.connect(dev_server.address, **connect_options)
    workflow_id = f"once-{uuid.uuid4()}"
    async with make_worker(client, task_queue, plugins=worker_plugins, interceptors=worker_interceptors):
        await client.execute_workflow(CompletingWorkflow.run, 0.0, id=workflow_id, task_queue=task_queue)

    names = Counter(e.event_name for e in captured_events if e.metadata.workflow_id == workflow_id)
    assert names == {
        ApplicationEventNames.WORKFLOW_START: 1,
        ApplicationEventNames.WORKFLOW_END: 1,
        ApplicationEventNames.ACTIVITY_START: 1,
        ApplicationEventNames.ACTIVITY_END: 1,
        None: 1,  # data.batch_processed, published by the activity
    }
    [worker_start] = captured_events.named(ApplicationEventNames.WORKER_START)
    assert worker_start.data["task_queue"] == task_queue
    assert worker_start.data["namespace"] == "default"
    assert worker_start.data["temporalio_version"] == temporalio.__version__
    assert worker_start.data["appevents_version"] == __version__
    assert worker_start.metadata.workflow_id is None


async def test_worker_start_carries_the_build_id(
    client: Client, task_queue: str, captured_events: CapturedEvents
) -> None:
    async with make_worker(client, task_queue, build_id="orders-2026.11.27"):
        pass
    [worker_start] = captured_events.named(ApplicationEventNames.WORKER_START)
    assert worker_start.data["build_id"] == "orders-2026.11.27"


async def test_worker_shutdown_delivers_what_was_published(client: Client, task_queue: str) -> None:
    exporter = InMemoryEventExporter()
    opened = threading.Event()
    deliver = exporter.export_events

    def held_export(batch: Sequence[EncodedEvent]) -> ExportOutcome:
        opened.wait(30)  # a destination that takes nothing until the worker has begun to stop
        return deliver(batch)

    exporter.export_events = held_export  # type: ignore[method-assign]
    configure(AppEventsSettings(exporters=[]), exporters={"memory": exporter})
    workflow_id = f"flush-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        await client.execute_workflow(CompletingWorkflow.run, 0.0, id=workflow_id, task_queue=task_queue)
        assert exporter.events == []
        # Opened 2 s after the worker begins to stop: only a shutdown that waits for delivery sees the events.
        threading.Timer(2.0, opened.set).start()
    names = [e.event_name for e in exporter.events]
    assert names.count(ApplicationEventNames.WORKER_START) == 1
    assert names.count(ApplicationEventNames.WORKFLOW_END) == 1
    assert len(exporter.events) == 6  # worker_start, 4 lifecycle events, the activity's own event
