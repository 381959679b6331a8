"""How the exporter is found and switched on: entry points, and disabled (with one info line) without a key."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from segment_events import lifecycle_event

from appevents import AppEventsSettings, ApplicationEventNames, ConfigurationError, configure
from appevents._records import record_attributes
from appevents_exporter_segment import SegmentExporter, create_segment_exporter
from support.segment_receiver import SegmentReceiver

pytestmark = pytest.mark.timeout(30)


def test_registered_as_appevents_exporter_and_otel_logs_exporter() -> None:
    [core] = entry_points(group="appevents.exporters", name="segment")
    [otel] = entry_points(group="opentelemetry_logs_exporter", name="appevents_segment")
    assert core.load() is create_segment_exporter
    assert otel.load() is SegmentExporter


def test_without_write_key_the_exporter_is_disabled_with_a_warning_not_an_info_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("APPEVENTS_SEGMENT_WRITE_KEY", raising=False)
    caplog.set_level(logging.DEBUG)
    pipeline = configure(AppEventsSettings(exporters=["segment", "memory"]))
    assert sorted(pipeline.channels) == ["memory"]
    ours = [r for r in caplog.records if r.name.startswith("appevents.segment")]
    # Said once per process (test_segment_disabled_warning counts it in a process of its own): none here when an
    # earlier test said it, and never at INFO, which is invisible by default.
    assert [r.levelno for r in ours if "APPEVENTS_SEGMENT_WRITE_KEY" in r.getMessage()] in ([], [logging.WARNING])
    with pytest.raises(ConfigurationError, match="APPEVENTS_SEGMENT_WRITE_KEY"):
        SegmentExporter()


def test_otel_entry_point_exporter_works_under_a_plain_otel_logger_provider(
    segment_env: None, segment_receiver: SegmentReceiver
) -> None:
    # What `OTEL_LOGS_EXPORTER=appevents_segment opentelemetry-instrument ...` does: construct with no arguments.
    [entry_point] = entry_points(group="opentelemetry_logs_exporter", name="appevents_segment")
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(entry_point.load()()))
    event = lifecycle_event(ApplicationEventNames.WORKFLOW_START)
    logger = provider.get_logger("appevents")
    logger.emit(body=event.model_dump_json(), attributes=record_attributes(event), event_name=event.event_type)
    logger.emit(body="an ordinary log line, not an event")
    provider.shutdown()

    assert [(m["event"], m["messageId"], m["userId"]) for m in segment_receiver.messages] == [
        ("workflow_started", event.event_id, "billing:acme")
    ]
