"""Workflow code never sets the pipeline up: without a configured pipeline its events are skipped and counted."""

from __future__ import annotations

import logging
import uuid

import pytest
from temporalio.testing import WorkflowEnvironment

from appevents import EventStore
from temporal.support import make_worker
from temporal.workflows import PublishingWorkflow


@pytest.mark.timeout(60)
async def test_workflow_code_does_not_configure_the_pipeline(
    time_skipping_env: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    pipeline_builds: list[str],
) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "memory")
    builders = pipeline_builds
    task_queue = f"tq-{uuid.uuid4()}"
    async with make_worker(time_skipping_env.client, task_queue, plugins=[]):  # no plugin: nothing configures
        await time_skipping_env.client.execute_workflow(
            PublishingWorkflow.run, False, id=f"wf-{uuid.uuid4()}", task_queue=task_queue
        )
    workflow_threads = [name for name in builders if name.startswith("temporal_workflow")]
    assert workflow_threads == [], f"a pipeline was built on a workflow thread: {builders}"
    # The two events workflow code published before the activity's own publish configured the pipeline (on the
    # activity's side, outside the sandbox) were skipped and counted, with one warning.
    assert builders, "the activity's publish configures the pipeline"
    assert EventStore.unpublished_count() == 2
    warnings = [r for r in caplog.records if "published from workflow code" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
