"""The store's own lifecycle: first use from many threads, shutdown deadlines, exit paths, the test kit's swap."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from appevents import AppEventsSettings, ConfigurationError, Event, EventStore, configure
from appevents._memory import CapturedEvents, InMemoryEventExporter
from appevents._records import event_from_json
from appevents.testing import captured_events


class StuckExporter(LogRecordExporter):
    """Hangs until shut down, then reports its batch as not exported."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.release.wait(60)
        return LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self.release.set()


def test_concurrent_first_publishes_build_one_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "memory")
    start = threading.Barrier(16)
    pipelines = []

    def first_publish() -> None:
        start.wait()
        EventStore.publish(Event(event_type="a.b"))
        pipelines.append(EventStore.pipeline())

    threads = [threading.Thread(target=first_publish) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(pipelines) == 16 and len({id(p) for p in pipelines}) == 1
    assert EventStore.flush_sync(5)
    [pipeline] = {id(p): p for p in pipelines}.values()
    assert pipeline is not None
    exporter = pipeline.exporter("memory")
    assert isinstance(exporter, InMemoryEventExporter) and len(exporter.events) == 16


def test_shutdown_keeps_one_deadline_for_all_exporters_and_reports_leftovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = [StuckExporter() for _ in range(3)]
    configure(AppEventsSettings(exporters=[]), exporters={f"stuck{i}": e for i, e in enumerate(stuck)})
    for _ in range(10):
        EventStore.publish(Event(event_type="a.b"))
    began = time.monotonic()
    assert EventStore.shutdown(timeout_s=1.0) is False
    elapsed = time.monotonic() - began
    # Three stuck exporters share the one second (plus one short join each), not a second each.
    assert elapsed < 2.5, elapsed
    [report] = [r.getMessage() for r in caplog.records if "did not deliver everything" in r.getMessage()]
    for name in ("stuck0", "stuck1", "stuck2"):
        assert f"{name}: 0 of 10 delivered, 10 dropped {{'shutdown': 10}}" in report


def test_shutdown_reports_success_when_everything_was_delivered() -> None:
    configure(AppEventsSettings(exporters=[]), exporters={"memory": InMemoryEventExporter()})
    EventStore.publish(Event(event_type="a.b"))
    assert EventStore.shutdown(timeout_s=5) is True


_POOL_EXPORTER_AT_EXIT = """
import sys
from concurrent.futures import ThreadPoolExecutor
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from appevents import AppEventsSettings, Event, EventStore, configure
from appevents._records import event_json_from_record

class PoolExporter(LogRecordExporter):
    # Sends through a thread pool, as the Dapr exporter does.
    def __init__(self, path):
        self.pool = ThreadPoolExecutor(4)
        self.out = open(path, "a")
    def export(self, batch):
        for future in [self.pool.submit(event_json_from_record, r) for r in batch]:
            self.out.write(future.result() + "\\n")
        self.out.flush()
        return LogRecordExportResult.SUCCESS
    def force_flush(self, timeout_millis=0):
        return True
    def shutdown(self):
        self.pool.shutdown()

configure(AppEventsSettings(exporters=[], schedule_delay_ms=5000), exporters={"pool": PoolExporter(sys.argv[1])})
for i in range(200):
    EventStore.publish(Event(event_type="batch.item", data={"i": i}))
"""  # no flush: the exit path must drain while thread pools still take work


@pytest.mark.timeout(60)
def test_exit_drains_through_exporters_that_use_thread_pools(tmp_path: Path) -> None:
    out = tmp_path / "delivered.jsonl"
    subprocess.run([sys.executable, "-c", _POOL_EXPORTER_AT_EXIT, str(out)], check=True, timeout=45)
    delivered = [event_from_json(line).data["i"] for line in out.read_text().splitlines()]
    assert sorted(delivered) == list(range(200))  # type: ignore[type-var]


@pytest.mark.timeout(60)
def test_sigterm_handling_is_in_place_from_import_and_an_applications_own_handler_is_left_alone(
    tmp_path: Path,
) -> None:
    script = textwrap.dedent(
        """
        import signal, sys, threading
        if sys.argv[1] == "own":
            def mine(signum, frame): pass
            signal.signal(signal.SIGTERM, mine)
        from appevents import AppEventsSettings, configure
        worker = threading.Thread(target=lambda: configure(AppEventsSettings(exporters=[])))
        worker.start(); worker.join()  # a first configure off the main thread
        handler = signal.getsignal(signal.SIGTERM)
        if sys.argv[1] == "own":
            assert handler is mine, handler
        else:
            assert handler is not signal.SIG_DFL and handler.__module__ == "appevents._event_store", handler
        """
    )
    for case in ("none", "own"):
        subprocess.run([sys.executable, "-c", script, case], check=True, timeout=45)


def test_enrichment_before_any_configuration_uses_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_APPLICATION_NAME", "billing")
    event = EventStore.enrich_event_metadata(Event(event_type="a.b"))
    assert event.metadata.application_name == "billing"


def test_the_size_cap_comes_from_the_environment_before_configure_and_stored_events_read_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APPEVENTS_MAX_EVENT_BYTES", "100")
    EventStore.shutdown()  # forget any cap a previous configuration set
    with pytest.raises(ValueError, match="100 bytes"):
        Event(event_type="a.b", data={"blob": "x" * 200})
    monkeypatch.setenv("APPEVENTS_MAX_EVENT_BYTES", "100000")
    configure(AppEventsSettings(exporters=[]))
    big = Event(event_type="a.b", data={"blob": "x" * 5000}).model_dump_json()
    configure(AppEventsSettings(exporters=[], max_event_bytes=100))
    assert event_from_json(big).data["blob"] == "x" * 5000  # published under a larger cap: still readable


def test_service_name_from_otel_resource_attributes_is_kept_unless_an_application_name_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-resource,team=data")
    assert configure(AppEventsSettings(exporters=[])).resource.attributes["service.name"] == "from-resource"
    named = configure(AppEventsSettings(exporters=[], application_name="orders"))
    assert named.resource.attributes["service.name"] == "orders"


def test_a_misconfigured_exporter_is_a_configuration_error_without_the_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APPEVENTS_DAPR_MAX_IN_FLIGHT", "0")
    with pytest.raises(ConfigurationError, match="max_in_flight") as info:
        configure(AppEventsSettings(exporters=["dapr"]))
    assert "'0'" not in str(info.value)


def test_the_memory_exporter_does_not_need_pytest() -> None:
    script = "import sys, appevents._memory; assert 'pytest' not in sys.modules, 'memory imported pytest'"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30, env={**os.environ})


def test_captured_events_sets_the_application_pipeline_aside_and_puts_it_back() -> None:
    app_exporter = InMemoryEventExporter()
    app_pipeline = configure(AppEventsSettings(exporters=[], application_name="app"), exporters={"app": app_exporter})
    fixture = captured_events.__wrapped__()  # type: ignore[attr-defined]
    capture: CapturedEvents = next(fixture)
    EventStore.publish(Event(event_type="during.test"))
    assert [e.event_type for e in capture] == ["during.test"]
    with pytest.raises(StopIteration):
        next(fixture)
    assert EventStore.pipeline() is app_pipeline, "the application's pipeline is back, not rebuilt"
    EventStore.publish(Event(event_type="after.test"))
    assert EventStore.flush_sync(5)
    assert [e.event_type for e in app_exporter.events] == ["after.test"]
    assert app_exporter.events[0].metadata.application_name == "app"
