"""``EventInterceptor`` on its own (no plugin): it sets the pipeline up while the worker is constructed."""

from __future__ import annotations

import threading
import uuid

import pytest
from temporalio.client import Client

from appevents import ApplicationEventNames, EventStore
from appevents._memory import InMemoryEventExporter
from appevents.temporal import EventInterceptor
from temporal.support import lifecycle, make_worker, of_workflow
from temporal.workflows import PublishingWorkflow

pytestmark = pytest.mark.timeout(60)


async def test_interceptor_alone_configures_from_the_environment_outside_workflow_code(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch, pipeline_builds: list[str]
) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "memory")
    builders = pipeline_builds
    workflow_id = f"alone-{uuid.uuid4()}"

    # No plugin: the sandbox passthrough set by hand (make_worker does it as a user would), the interceptor listed.
    worker = make_worker(client, task_queue, plugins=[], interceptors=[EventInterceptor()])
    assert builders == [threading.current_thread().name]  # while constructing the worker, before any workflow
    async with worker:
        ids = await client.execute_workflow(PublishingWorkflow.run, False, id=workflow_id, task_queue=task_queue)
    assert await EventStore.flush()

    pipeline = EventStore.pipeline()
    assert pipeline is not None
    exporter = pipeline.exporter("memory")
    assert isinstance(exporter, InMemoryEventExporter)
    assert lifecycle(exporter.events, workflow_id) == [
        (ApplicationEventNames.WORKFLOW_START, "running"),
        (ApplicationEventNames.ACTIVITY_START, None),
        (ApplicationEventNames.ACTIVITY_END, "completed"),
        (ApplicationEventNames.WORKFLOW_END, "completed"),
    ]
    published = [e.event_id for e in of_workflow(exporter.events, workflow_id) if e.event_type.startswith("order.")]
    assert published == ids
    assert EventStore.stats()["memory"].delivered == len(exporter.events)
    assert EventStore.unpublished_count() == 0
    assert len(builders) == 1  # one pipeline, never rebuilt from a workflow thread
