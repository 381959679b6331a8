"""With temporalio's OpenTelemetry TracingInterceptor on, events carry the trace they were published in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from appevents import ApplicationEventNames
from appevents._demo.devserver import DevServer
from appevents._sqlite_log import LocalEventLog
from appevents.testing import CapturedEvents
from temporal.support import make_worker, of_workflow
from temporal.workflows import PublishingWorkflow

TESTS = Path(__file__).parent.parent


pytestmark = pytest.mark.timeout(60)


async def test_events_carry_trace_ids_when_tracing_is_on(
    dev_server: DevServer, task_queue: str, captured_events: CapturedEvents
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    client = await Client.connect(
        dev_server.address, interceptors=[TracingInterceptor(provider.get_tracer("appevents-tests"))]
    )
    workflow_id = f"traced-{uuid.uuid4()}"
    async with make_worker(client, task_queue):
        await client.execute_workflow(PublishingWorkflow.run, False, id=workflow_id, task_queue=task_queue)
    provider.force_flush()

    trace_ids = {format(span.context.trace_id, "032x") for span in spans.get_finished_spans()}
    assert len(trace_ids) == 1  # one trace: StartWorkflow → RunWorkflow → StartActivity → RunActivity
    [trace_id] = trace_ids
    events = of_workflow(captured_events, workflow_id)
    in_activity = captured_events.of_type("data.batch_processed")
    in_workflow = [e for e in events if e.event_type.startswith("order.")]
    lifecycle = [e for e in events if e.event_name in (ApplicationEventNames.ACTIVITY_START,)]
    for event in in_activity + in_workflow + lifecycle:
        assert event.metadata.trace_id == trace_id, event.event_type
        assert event.metadata.span_id is not None
    span_ids = {format(span.context.span_id, "016x") for span in spans.get_finished_spans()}
    assert in_activity[0].metadata.span_id in span_ids


#: A worker app with both plugins on its client, in the order given, registered as the README says (on the client
#: only: a UserWarning such as temporalio's "may run twice" fails the app); OpenTelemetryPlugin needs the process's
#: global tracer provider to be its replay-safe one, so the app runs in an interpreter of its own.
PLUGIN_ORDER_APP = textwrap.dedent(
    """
    import asyncio, sys, uuid

    from opentelemetry import trace
    from temporalio.client import Client
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider
    from temporalio.worker import Worker

    from appevents.temporal import AppEventsPlugin
    from temporal.workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, CompletingWorkflow


    async def main(address: str, order: str) -> None:
        trace.set_tracer_provider(create_tracer_provider())
        plugins = [AppEventsPlugin(), OpenTelemetryPlugin()]
        client = await Client.connect(address, plugins=plugins if order == "appevents-first" else plugins[::-1])
        queue = f"order-{uuid.uuid4()}"
        async with Worker(client, task_queue=queue, workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            with trace.get_tracer("app").start_as_current_span("request") as request:
                await client.execute_workflow(CompletingWorkflow.run, 0.0, id=queue, task_queue=queue)
        context = request.get_span_context()
        print(queue, format(context.trace_id, "032x"), format(context.span_id, "016x"), flush=True)


    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("order", ["appevents-first", "opentelemetry-first"])
def test_lifecycle_events_carry_the_trace_whatever_the_plugin_order(
    dev_server: DevServer, tmp_path: Path, order: str
) -> None:
    log_path = tmp_path / "events.db"
    env = {
        **os.environ,
        "APPEVENTS_EXPORTERS": "local",
        "APPEVENTS_LOCAL_PATH": str(log_path),
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", PLUGIN_ORDER_APP, dev_server.address, order],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stderr
    workflow_id, trace_id, span_id = result.stdout.split()
    events = [row.event() for row in LocalEventLog(log_path).query(workflow_id=workflow_id)]
    lifecycle = [e for e in events if e.event_name in {n.value for n in ApplicationEventNames}]
    assert sorted(str(e.event_name) for e in lifecycle) == [
        "activity_end",
        "activity_start",
        "workflow_end",
        "workflow_start",
    ]
    # The caller's span (OpenTelemetryPlugin adds no spans of its own by default), in either order.
    assert {(e.metadata.trace_id, e.metadata.span_id) for e in lifecycle} == {(trace_id, span_id)}
