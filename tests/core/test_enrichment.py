"""Enrichment fills gaps from the context (application, time, topic, Temporal, trace) and never overwrites."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from opentelemetry.sdk.trace import TracerProvider
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from appevents import Event, EventMetadata, EventStore, WorkflowStates, configure
from appevents._enrichment import add_topic, enrich
from appevents._settings import AppEventsSettings
from appevents._version import __version__


def test_outside_temporal_only_application_time_and_topic_are_filled() -> None:
    configure(AppEventsSettings(exporters=[], application_name="orders", tenant_id="acme", topic_prefix="ev."))
    before = int(time.time())
    event = EventStore.enrich_event_metadata(Event(event_type="order.received"))
    meta = event.metadata
    assert (meta.application_name, meta.tenant_id, meta.sdk_version) == ("orders", "acme", __version__)
    assert meta.topic_name == "ev.order.received"
    assert meta.created_timestamp is not None and before <= meta.created_timestamp <= int(time.time())
    assert meta.workflow_id is None and meta.activity_type is None and meta.workflow_state is None
    assert meta.trace_id is None and meta.span_id is None


def test_enrich_returns_the_same_instance() -> None:
    event = Event(event_type="a.b")
    assert EventStore.enrich_event_metadata(event) is event


def test_inside_a_real_activity_activity_and_parent_workflow_are_filled() -> None:
    @activity.defn(name="process_order")
    async def process_order() -> Event:
        return EventStore.enrich_event_metadata(Event(event_type="order.received"))

    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        activity_type="process_order",
        attempt=3,
        workflow_id="wf-1",
        workflow_run_id="run-1",
        workflow_type="Orders",
    )
    event = asyncio.run(env.run(process_order))
    meta = event.metadata
    assert meta.activity_type == "process_order"
    assert meta.activity_id == env.info.activity_id
    assert meta.attempt == 3
    assert (meta.workflow_type, meta.workflow_id, meta.workflow_run_id) == ("Orders", "wf-1", "run-1")
    assert meta.workflow_state == WorkflowStates.RUNNING


def test_caller_set_fields_survive_enrichment_inside_an_activity() -> None:
    @activity.defn(name="finish")
    async def finish() -> Event:
        event = Event(
            event_type="workflow.lifecycle",
            event_name="workflow_end",
            metadata=EventMetadata(workflow_state="failed", application_name="mine", topic_name="custom", attempt=9),
        )
        return EventStore.enrich_event_metadata(event)

    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type="finish")
    meta = asyncio.run(env.run(finish)).metadata
    assert meta.workflow_state == "failed"
    assert (meta.application_name, meta.topic_name, meta.attempt) == ("mine", "custom", 9)
    assert meta.activity_type == "finish"


def test_trace_and_span_ids_come_from_the_current_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        event = EventStore.enrich_event_metadata(Event(event_type="a.b"))
    context = span.get_span_context()
    assert event.metadata.trace_id == format(context.trace_id, "032x")
    assert event.metadata.span_id == format(context.span_id, "016x")


def test_steps_apply_in_the_given_order_and_each_fills_only_gaps() -> None:
    settings = AppEventsSettings(exporters=[], topic_prefix="p.")
    seen: list[str] = []

    def first(event: Event, s: AppEventsSettings) -> None:
        seen.append("first")
        event.metadata.topic_name = "set-by-first"

    def second(event: Event, s: AppEventsSettings) -> None:
        seen.append("second")

    event = enrich(Event(event_type="a.b"), settings, [first, add_topic, second])
    assert seen == ["first", "second"]
    assert event.metadata.topic_name == "set-by-first"
