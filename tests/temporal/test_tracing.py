"""With temporalio's OpenTelemetry TracingInterceptor on, events carry the trace they were published in."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from appevents import ApplicationEventNames
from appevents._demo.devserver import DevServer
from appevents.testing import CapturedEvents
from temporal.support import make_worker, of_workflow
from temporal.workflows import PublishingWorkflow

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
