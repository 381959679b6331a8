"""The Temporal part of ``appevents demo``: a real dev server, a worker with :class:`AppEventsPlugin`, and a small
data-processing workflow shaped like the Atlan application-sdk's ``EventStore`` examples.

Each workflow publishes ``workflow.started`` / ``workflow.completed`` (or ``workflow.failed``) from workflow code —
directly, not through activities — runs an activity that reports ``activity.progress`` per batch and an order flow
(``order.received``, ``order.payment_processed``); the plugin adds the lifecycle events around all of it. One of
the datasets is corrupt, so one run fails and shows ``workflow_end`` with state ``failed``.

The workflows and activities live in this module, which the plugin passes through the sandbox with the rest of
``appevents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from appevents._demo.devserver import DevServer
from appevents._event_store import EventStore
from appevents._models import Event, EventMetadata, WorkflowStates
from appevents.temporal._plugin import AppEventsPlugin

__all__ = ["DataProcessingWorkflow", "process_large_dataset", "process_order", "run_temporal_demo"]

#: (dataset id, records, order id); the corrupt dataset makes its run fail.
DEMO_DATASETS: tuple[tuple[str, int, str], ...] = (
    ("customers-2026-11", 4_000, "o-1001"),
    ("invoices-2026-11", 2_500, "o-1002"),
    ("corrupt-export", 3_000, "o-1003"),
)
_BATCH_SIZE = 1_000
_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=2)


@activity.defn
async def process_large_dataset(dataset_id: str, total_records: int) -> dict[str, int]:
    """Processes a dataset batch by batch and reports progress after each batch (the application-sdk's pattern)."""
    processed = 0
    for start in range(0, total_records, _BATCH_SIZE):
        await asyncio.sleep(0.05)  # stands in for real work
        if dataset_id.startswith("corrupt") and start > 0:
            raise ApplicationError(f"{dataset_id}: unreadable batch at record {start}", type="CorruptData")
        processed += min(_BATCH_SIZE, total_records - start)
        await EventStore.publish_event(
            Event(
                event_type="activity.progress",
                data={
                    "dataset_id": dataset_id,
                    "processed_records": processed,
                    "total_records": total_records,
                    "progress_percentage": round(processed / total_records * 100, 1),
                },
            )
        )
    return {"count": processed}


@activity.defn
async def process_order(order_id: str) -> dict[str, str]:
    """The application-sdk's business-event example: order received, payment processed."""
    await EventStore.publish_event(
        Event(
            event_type="order.received",
            data={"order_id": order_id, "customer_id": "c-42", "total_amount": 129.9, "item_count": 3},
        )
    )
    await asyncio.sleep(0.02)
    transaction_id = f"tx-{order_id}"
    await EventStore.publish_event(
        Event(
            event_type="order.payment_processed",
            data={"order_id": order_id, "payment_status": "captured", "transaction_id": transaction_id},
        )
    )
    return {"status": "captured", "transaction_id": transaction_id}


@workflow.defn
class DataProcessingWorkflow:
    """The application-sdk example workflow, publishing from workflow code (no extra activities, no history growth)."""

    @workflow.run
    async def run(self, dataset_id: str, total_records: int, order_id: str) -> dict[str, Any]:
        await EventStore.publish_event(
            Event(
                event_type="workflow.started",
                data={"dataset_id": dataset_id, "input_size": total_records, "processing_mode": "batch"},
            )
        )
        started = workflow.now()
        try:
            result = await workflow.execute_activity(
                process_large_dataset,
                args=[dataset_id, total_records],
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=_RETRY,
            )
            payment = await workflow.execute_activity(
                process_order, order_id, start_to_close_timeout=timedelta(minutes=1), retry_policy=_RETRY
            )
        except Exception as error:
            await EventStore.publish_event(
                Event(
                    event_type="workflow.failed",
                    data={"dataset_id": dataset_id, "error": str(error), "error_type": type(error).__name__},
                    # What the application knows: this run is failing (enrichment keeps a state the caller set).
                    metadata=EventMetadata(workflow_state=WorkflowStates.FAILED),
                )
            )
            raise
        await EventStore.publish_event(
            Event(
                event_type="workflow.completed",
                metadata=EventMetadata(workflow_state=WorkflowStates.COMPLETED),
                data={
                    "dataset_id": dataset_id,
                    "records_processed": result["count"],
                    "duration_seconds": (workflow.now() - started).total_seconds(),
                },
            )
        )
        return {"records_processed": result["count"], **payment}


async def _run_workflows(client: Client) -> int:
    task_queue = f"appevents-demo-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[DataProcessingWorkflow],
        activities=[process_large_dataset, process_order],
        plugins=[AppEventsPlugin()],
    ):
        handles = [
            await client.start_workflow(
                DataProcessingWorkflow.run,
                args=[dataset_id, records, order_id],
                id=f"data-processing-{dataset_id}-{uuid.uuid4().hex[:6]}",
                task_queue=task_queue,
            )
            for dataset_id, records, order_id in DEMO_DATASETS
        ]
        for handle in handles:
            # The corrupt dataset's run fails on purpose; its events tell the story.
            with contextlib.suppress(WorkflowFailureError):
                await handle.result()
    return len(handles)


async def run_temporal_demo(address: str | None) -> int:
    """Run the demo workflows against ``address`` (or a dev server started here); returns how many ran.

    Their events go to the configured pipeline (``appevents demo`` shows them as they land in the local log). The
    server (if started here) and the worker are stopped on return, on error and on cancellation (Ctrl-C).
    """
    server = DevServer() if address is None else None
    # The failing run is intended: keep temporalio's per-attempt failure tracebacks out of the demo's table.
    activity_logger = logging.getLogger("temporalio.activity")
    previous_level = activity_logger.level
    activity_logger.setLevel(logging.ERROR)
    try:
        if server is not None:
            server.start()  # a fraction of a second; blocking keeps start and stop strictly ordered
        client = await Client.connect(server.address if server is not None else str(address))
        return await _run_workflows(client)
    finally:
        activity_logger.setLevel(previous_level)
        if server is not None:
            server.stop()
