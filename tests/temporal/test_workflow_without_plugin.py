"""Workflow code that publishes on a worker without ``AppEventsPlugin`` (the default sandbox, which re-imports
appevents inside it): nothing appevents does there touches a restricted call or raises; the workflow completes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from temporalio.client import Client
from temporalio.worker import Worker

from appevents import AppEventsSettings, EventStore, configure
from appevents._sqlite_log import LocalEventLog
from support.metric_points import Metrics
from temporal.readme_workflow import ChangedInPlaceWorkflow, ReadmeWorkflow

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("configured_first", [False, True], ids=["unconfigured", "configure-called"])
async def test_the_readme_workflow_completes_on_a_worker_without_the_plugin(
    client: Client, task_queue: str, configured_first: bool, tmp_path: Path
) -> None:
    log = tmp_path / "events.db"
    if configured_first:
        configure(AppEventsSettings(exporters=["local"], local_path=log))
    workflow_id = f"readme-{uuid.uuid4()}"
    async with Worker(client, task_queue=task_queue, workflows=[ReadmeWorkflow]):  # the default sandbox
        handle = await client.start_workflow(ReadmeWorkflow.run, 3, id=workflow_id, task_queue=task_queue)
        published = await handle.result()
    history = await handle.fetch_history()
    failed_tasks = [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
    assert failed_tasks == [], "the workflow task never failed"
    if not configured_first:
        assert published is False, "nothing configured in the process: refused"
        assert EventStore.unpublished_count() == 1, "counted by the process's EventStore, not the sandbox's copy"
        return
    assert published is True, "the process's configured EventStore publishes the sandbox's event"
    assert EventStore.flush_sync(10)
    [stored] = [e for e in LocalEventLog(log) if e.event_type == "workflow.started"]
    assert stored.data == {"input_size": 3}
    assert (stored.metadata.workflow_type, stored.metadata.workflow_id) == ("ReadmeWorkflow", workflow_id)
    assert stored.metadata.workflow_run_id == handle.result_run_id


async def test_data_changed_in_place_into_non_json_in_the_sandbox_is_refused_as_invalid_data(
    client: Client, task_queue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, reader: InMemoryMetricReader
) -> None:
    configure(AppEventsSettings(exporters=["local"], local_path=tmp_path / "events.db"))
    async with Worker(client, task_queue=task_queue, workflows=[ChangedInPlaceWorkflow]):  # the default sandbox
        handle = await client.start_workflow(
            ChangedInPlaceWorkflow.run, id=f"in-place-{uuid.uuid4()}", task_queue=task_queue
        )
        assert await handle.result() is False
    assert EventStore.unpublished_count() == 1
    refused = {str(dict(k)["reason"]): v for k, v in Metrics(reader).values("appevents.events.refused").items() if v}
    assert refused == {"invalid_data": 1}
    [refusal] = [r.getMessage() for r in caplog.records if "refused at publish" in r.getMessage()]
    assert "data.ids" in refusal and "{1, 2}" not in refusal, "names the field, never the value"
