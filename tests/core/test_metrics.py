"""Self-metrics (``appevents._metrics``): what the OpenTelemetry metrics API sees agrees exactly with
``EventStore.stats()`` — per exporter and reason, in memory and durable mode, including drops at a full queue, at
the spool and at shutdown — plus one duration point per export call, the gauges, and the published counter.

Each test records to its own SDK ``MeterProvider`` with an in-memory reader (``appevents._metrics.
use_meter_provider``): the global provider can be set only once per process, which the last test does in a child
process, after appevents was imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from appevents import AppEventsSettings, Event, EventStore, configure
from appevents._memory import InMemoryEventExporter
from appevents._pipeline import Pipeline, build_pipeline
from appevents._records import encode_event, event_from_json
from appevents.exporting import EncodedEvent, ExportOutcome
from support.metric_points import Metrics, assert_metrics_equal_stats
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def _settings(**overrides: object) -> AppEventsSettings:
    return AppEventsSettings(**{"exporters": [], "schedule_delay_ms": 20, **overrides})  # type: ignore[arg-type]


class Scripted:
    """An encoded-path exporter whose answer per event is its ``data["fate"]``; counts its calls; can be held."""

    def __init__(self, retry_calls: int = 0) -> None:
        self.calls = 0
        self.retry_calls = retry_calls  # the first calls answer retry for the whole batch
        self.returned_for_retry = 0
        self.release = threading.Event()
        self.release.set()

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        self.calls += 1
        self.release.wait(30)
        if self.calls <= self.retry_calls:
            self.returned_for_retry += len(batch)
            return ExportOutcome(retry=list(batch), retry_reason="UNAVAILABLE: test")
        fates = [event_from_json(event.body).data.get("fate", "ok") for event in batch]
        if "raise" in fates:
            raise RuntimeError("exporter bug")
        outcome = ExportOutcome()
        for event, fate in zip(batch, fates, strict=True):
            if fate == "refuse":
                outcome.failed.append((event, "refused:TEST"))
            elif fate == "too_large":
                outcome.failed.append((event, "too_large"))
            elif fate == "skip":
                outcome.dropped.append((event, "no_component"))
            elif fate == "later":
                outcome.retry.append(event)
        return outcome

    def shutdown(self) -> None:
        self.release.set()


def publish(fates: Sequence[str], event_type: str = "a.b") -> list[bool]:
    """Publish one event per fate; what each publish answered (False: refused at the door, counted)."""
    return [EventStore.publish(Event(event_type=event_type, data={"fate": fate})) for fate in fates]


# -- counters agree with stats -----------------------------------------------------------------------------------
def test_events_through_local_are_counted_exported_once_each(reader: InMemoryMetricReader) -> None:
    configure(_settings(exporters=["local"]))
    publish(["ok"] * 120)
    assert EventStore.flush_sync(5)
    metrics = Metrics(reader)
    assert metrics.by_exporter("appevents.events.exported") == {"local": 120}
    assert metrics.values("appevents.events.published") == {frozenset(): 120}
    assert_metrics_equal_stats(metrics, EventStore.stats())
    assert metrics.durations()["local"] >= 1
    assert "appevents.events.failed" not in metrics.points and "appevents.events.dropped" not in metrics.points


def test_counters_per_exporter_and_reason_equal_stats_with_one_duration_point_per_export_call(
    reader: InMemoryMetricReader,
) -> None:
    scripted = Scripted()
    configure(_settings(exporters=["local"], max_export_batch_size=7), exporters={"scripted": scripted})
    publish(["raise"])  # alone in its batch: that batch fails, reason exporter_error:RuntimeError
    assert EventStore.flush_sync(5)
    publish(["ok"] * 40 + ["refuse"] * 5 + ["too_large"] * 2 + ["skip"] * 3 + ["later"] * 4 + ["ok"] * 9)
    assert EventStore.flush_sync(5)
    stats = EventStore.stats()
    assert stats["scripted"].failed_reasons == {
        "exporter_error:RuntimeError": 1,
        "refused:TEST": 5,
        "too_large": 2,
        "unavailable": 4,  # no spool: "retry" is counted failed
    }
    assert stats["scripted"].dropped_reasons == {"no_component": 3}
    assert stats["scripted"].delivered == 49 and stats["local"].delivered == 64
    metrics = Metrics(reader)
    assert_metrics_equal_stats(metrics, stats)
    assert metrics.durations()["scripted"] == scripted.calls > 9
    assert "appevents.events.retried" not in metrics.points  # nothing is offered again without a spool


def test_drops_at_a_full_queue_and_at_shutdown_are_counted_as_stats_count_them(
    reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    scripted = Scripted()
    scripted.release.clear()
    pipeline = configure(_settings(max_queue_size=5, max_export_batch_size=1), exporters={"scripted": scripted})
    publish(["ok"])
    assert wait_until(lambda: scripted.calls == 1)  # held in its export call
    assert publish(["ok"] * 8) == [True] * 5 + [False] * 3  # 5 queued, 3 dropped: queue_full
    assert pipeline.stats()["scripted"].dropped_reasons == {"queue_full": 3}
    assert_metrics_equal_stats(Metrics(reader), pipeline.stats())
    # Out of time: the exporter is shut down under its export (which then delivers its one event); the 5 queued
    # are lost at shutdown; an event offered after that is refused at the closed door.
    assert EventStore.shutdown(timeout_s=0.3) is False
    caplog.clear()
    pipeline.submit(encode_event(Event(event_type="a.b")))
    pipeline.submit(encode_event(Event(event_type="a.b")))
    stats = pipeline.stats()
    assert stats["scripted"].dropped_reasons == {"queue_full": 3, "shutdown": 7}
    # Said once, as what it is: no advice about a queue size or a spool for a door that is shut.
    [closed] = [r.getMessage() for r in caplog.records if "scripted channel is shut down" in r.getMessage()]
    assert "APPEVENTS_MAX_QUEUE_SIZE" not in closed and "drains" not in closed
    assert stats["scripted"].delivered == 1
    metrics = Metrics(reader)
    assert_metrics_equal_stats(metrics, stats)
    assert metrics.durations() == {"scripted": scripted.calls}


def test_durable_mode_counts_the_spool_stage_and_each_re_offer(reader: InMemoryMetricReader, tmp_path: Path) -> None:
    scripted = Scripted(retry_calls=2)
    configure(
        _settings(spool_path=tmp_path / "spool.db", exporters=["local"]),
        exporters={"scripted": scripted},
    )
    publish(["ok"] * 30 + ["refuse"] * 2 + ["skip"])
    assert EventStore.flush_sync(10)
    stats = EventStore.stats()
    assert stats["spool"].delivered == 33 and stats["scripted"].delivered == 30 and stats["local"].delivered == 33
    metrics = Metrics(reader)
    assert_metrics_equal_stats(metrics, stats)
    assert metrics.by_exporter("appevents.events.exported")["spool"] == 33  # committed
    # The first two calls answered "retry": each of their events was offered again once.
    assert scripted.returned_for_retry >= 2
    assert metrics.by_exporter("appevents.events.retried") == {"scripted": scripted.returned_for_retry}
    assert metrics.durations()["scripted"] == scripted.calls


def test_spool_refusals_are_dropped_on_the_spool_stage(reader: InMemoryMetricReader, tmp_path: Path) -> None:
    held = Scripted()
    held.release.clear()  # nothing leaves the spool
    configure(_settings(spool_path=tmp_path / "spool.db", spool_max_bytes=4000), exporters={"held": held})
    publish(["ok"] * 25)  # some 450 bytes each, enriched
    assert EventStore.flush_sync(0.5) is False
    stats = EventStore.stats()
    refused = stats["spool"].dropped_reasons["spool_full"]
    assert 0 < refused < 25 and stats["spool"].delivered == 25 - refused and stats["spool"].dropped == refused
    assert_metrics_equal_stats(Metrics(reader), stats)
    held.release.set()
    assert EventStore.flush_sync(5)
    assert_metrics_equal_stats(Metrics(reader), EventStore.stats())


# -- gauges ------------------------------------------------------------------------------------------------------
def test_queue_size_is_each_exporters_pending_and_a_shut_down_pipeline_reports_nothing(
    reader: InMemoryMetricReader,
) -> None:
    held = Scripted()
    held.release.clear()
    configure(_settings(), exporters={"held": held, "free": Scripted()})
    publish(["ok"] * 12)
    assert wait_until(lambda: EventStore.stats()["free"].pending == 0)
    metrics = Metrics(reader)
    assert metrics.values("appevents.queue.size") == {
        frozenset({("exporter", "held")}): 12,
        frozenset({("exporter", "free")}): 0,
    }
    held.release.set()
    assert EventStore.flush_sync(5)
    assert set(Metrics(reader).values("appevents.queue.size").values()) == {0}
    EventStore.shutdown()
    assert "appevents.queue.size" not in Metrics(reader).points


def test_gauges_follow_the_current_pipeline_across_configure_and_add_up_live_ones(
    reader: InMemoryMetricReader,
) -> None:
    first = Scripted()
    first.release.clear()
    configure(_settings(), exporters={"first": first})
    publish(["ok"] * 3)
    assert Metrics(reader).by_exporter("appevents.queue.size") == {"first": 3}
    first.release.set()
    configure(_settings(), exporters={"second": Scripted()})  # the first one is shut down
    assert set(Metrics(reader).values("appevents.queue.size")) == {frozenset({("exporter", "second")})}
    # Two live pipelines with an exporter of the same name: their queues add up.
    held_a, held_b = Scripted(), Scripted()
    held_a.release.clear()
    held_b.release.clear()
    configure(_settings(), exporters={"x": held_a})
    other: Pipeline = build_pipeline(_settings(), exporters={"x": held_b})
    try:
        publish(["ok"] * 2)
        other.submit(encode_event(Event(event_type="a.b")))
        assert Metrics(reader).by_exporter("appevents.queue.size") == {"x": 3}
    finally:
        held_a.release.set()
        held_b.release.set()
        other.shutdown(5)


def test_spool_gauges_report_rows_and_bytes_in_durable_mode(reader: InMemoryMetricReader, tmp_path: Path) -> None:
    held = Scripted()
    held.release.clear()
    configure(_settings(spool_path=tmp_path / "spool.db"), exporters={"held": held})
    events = [Event(event_type="a.b", data={"n": n}) for n in range(20)]
    for event in events:
        EventStore.publish(event)
    pipeline = EventStore.pipeline()
    assert pipeline is not None and pipeline.writer is not None and pipeline.writer.flush(time.monotonic() + 5)
    expected_bytes = sum(len(event.model_dump_json().encode()) for event in events)

    def spool_points() -> Metrics | None:
        metrics = Metrics(reader)  # each collection asks the writer for a fresh figure
        rows = metrics.values("appevents.spool.size")
        return metrics if rows == {frozenset(): 20} else None

    assert wait_until(spool_points, 5)
    metrics = Metrics(reader)
    assert metrics.values("appevents.spool.bytes") == {frozenset(): expected_bytes}
    assert metrics.by_exporter("appevents.queue.size") == {"held": 20}  # the spool stage's own pending is 0
    assert metrics.values("appevents.queue.size")[frozenset({("exporter", "spool")})] == 0
    held.release.set()
    assert EventStore.flush_sync(5)
    # Settled rows leave the spool at the next checkpoint (each second).
    assert wait_until(lambda: Metrics(reader).values("appevents.spool.size") == {frozenset(): 0}, 5)
    assert Metrics(reader).values("appevents.spool.bytes") == {frozenset(): 0}
    EventStore.shutdown()
    points = Metrics(reader).points
    assert not {"appevents.spool.size", "appevents.spool.bytes", "appevents.queue.size"} & set(points)


def test_no_spool_gauges_without_a_spool(reader: InMemoryMetricReader) -> None:
    configure(_settings(), exporters={"free": Scripted()})
    publish(["ok"])
    assert EventStore.flush_sync(5)
    points = Metrics(reader).points
    assert "appevents.queue.size" in points
    assert "appevents.spool.size" not in points and "appevents.spool.bytes" not in points


# -- published ---------------------------------------------------------------------------------------------------
def test_published_has_no_event_type_by_default(reader: InMemoryMetricReader) -> None:
    configure(_settings(), exporters={"free": Scripted()})
    for event_type in ("a.one", "a.two", "a.three"):
        publish(["ok"] * 2, event_type=event_type)
    assert Metrics(reader).values("appevents.events.published") == {frozenset(): 6}


def test_published_by_event_type_up_to_the_limit_then_other(reader: InMemoryMetricReader) -> None:
    configure(_settings(metrics_event_type_limit=2), exporters={"free": Scripted()})
    for event_type, count in (("a.one", 3), ("a.two", 1), ("a.three", 2), ("a.one", 1), ("a.four", 4)):
        publish(["ok"] * count, event_type=event_type)
    assert Metrics(reader).values("appevents.events.published") == {
        frozenset({("event.type", "a.one")}): 4,
        frozenset({("event.type", "a.two")}): 1,
        frozenset({("event.type", "other")}): 6,  # the 3rd and later distinct types
    }


def test_a_meter_provider_can_be_given_to_one_pipeline(reader: InMemoryMetricReader) -> None:
    own_reader = InMemoryMetricReader()
    own = MeterProvider(metric_readers=[own_reader])
    pipeline = build_pipeline(_settings(), exporters={"free": Scripted()}, meter_provider=own)
    try:
        pipeline.submit(encode_event(Event(event_type="a.b")))
        assert pipeline.flush(5)
        assert Metrics(own_reader).by_exporter("appevents.events.exported") == {"free": 1}
        assert "appevents.events.exported" not in Metrics(reader).points
    finally:
        pipeline.shutdown(5)
        own.shutdown()


# -- the global provider, set after appevents was imported --------------------------------------------------------
def test_a_global_meter_provider_set_after_import_receives_the_metrics(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from appevents import AppEventsSettings, Event, EventStore, configure

        configure(AppEventsSettings(exporters=["memory"], schedule_delay_ms=20))
        for n in range(3):  # no provider yet: the no-op proxy
            EventStore.publish(Event(event_type="a.b"))
        assert EventStore.flush_sync(5)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        for n in range(5):
            EventStore.publish(Event(event_type="a.b"))
        assert EventStore.flush_sync(5)
        configure(AppEventsSettings(exporters=["memory"], schedule_delay_ms=20))  # a pipeline built after the set
        EventStore.publish(Event(event_type="a.b"))
        assert EventStore.flush_sync(5)
        found = {}
        for resource in reader.get_metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = [
                        [dict(p.attributes), getattr(p, "value", getattr(p, "count", None))]
                        for p in metric.data.data_points
                    ]
        print(json.dumps(found))
        """
    )
    env = {**os.environ, "APPEVENTS_LOCAL_PATH": str(tmp_path / "events.db")}
    env.pop("OTEL_PYTHON_METER_PROVIDER", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # Published is observed from the pipelines' own counts: it counts since the process started (3 + 5 + 1);
    # the other counters count from when a provider was there to record them.
    assert found["appevents.events.published"] == [[{}, 9]]
    assert found["appevents.events.exported"] == [[{"exporter": "memory"}, 6]]
    assert found["appevents.queue.size"] == [[{"exporter": "memory"}, 0]]  # the live pipeline only, once
    assert "Overriding" not in result.stderr and "already" not in result.stderr, result.stderr


def test_a_forked_child_reports_its_own_pipeline_not_the_parents(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, os, sys
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from appevents import AppEventsSettings, Event, EventStore, configure
        from appevents import use_meter_provider

        reader = InMemoryMetricReader()
        use_meter_provider(MeterProvider(metric_readers=[reader]))

        def queue_sizes():
            data = reader.get_metrics_data()
            if data is None:  # nothing to report at all
                return {}
            return {
                p.attributes["exporter"]: p.value
                for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
                if m.name == "appevents.queue.size" for p in m.data.data_points
            }

        configure(AppEventsSettings(exporters=["memory"], schedule_delay_ms=60000, max_export_batch_size=1000))
        for n in range(5):
            EventStore.publish(Event(event_type="a.b"))  # queued: the batch is neither full nor due
        assert queue_sizes() == {"memory": 5}, queue_sizes()
        pid = os.fork()
        if pid == 0:
            inherited = queue_sizes()
            EventStore.publish(Event(event_type="a.b"))  # the child's own pipeline, built now
            ok = EventStore.flush_sync(10)
            print(json.dumps({"inherited": inherited, "own": queue_sizes(), "flushed": ok}), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        """
    )
    env = {**os.environ, "APPEVENTS_LOCAL_PATH": str(tmp_path / "events.db")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert child == {"inherited": {}, "own": {"memory": 0}, "flushed": True}


def test_refusals_at_publish_are_counted_by_reason_as_unpublished_count_counts_them(
    reader: InMemoryMetricReader,
) -> None:
    configure(_settings())  # no exporter: nothing to deliver to
    for _ in range(3):
        assert not EventStore.publish(Event(event_type="a.b"))
    assert EventStore.unpublished_count() == 3

    configure(_settings(max_event_bytes=2048), exporters={"memory": InMemoryEventExporter()})
    grown = Event(event_type="a.b", data={"blob": ""})
    grown.data["blob"] = "x" * 10_000  # past the cap (and the enrichment allowance) after construction
    broken = Event(event_type="a.b", data={"value": 1})
    broken.data["value"] = object()  # not JSON any more
    assert not EventStore.publish(grown)
    assert not EventStore.publish(broken)
    assert EventStore.publish(Event(event_type="a.b"))
    assert EventStore.unpublished_count() == 5

    found = Metrics(reader)
    refused = {str(dict(k)["reason"]): v for k, v in found.values("appevents.events.refused").items() if v}
    assert refused == {"no_destination": 3, "too_large": 1, "invalid_data": 1}
    assert sum(refused.values()) == EventStore.unpublished_count()
    assert sum(found.values("appevents.events.published").values()) == 1  # the one taken; refusals never are
