"""The ``otel`` exporter in-process: what it emits into a LoggerProvider, when it is chosen, what it does without
a provider; and the appevents exporters' OTel faces skipping what appevents delivers itself."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

from appevents import AppEventsSettings, ApplicationEventNames, Event, EventStore, configure
from appevents._otel_route import OTelLogsExporter, create_otel_exporter
from appevents._records import DELIVERED_BY_ATTRIBUTE
from appevents.exporting import encode_event, encoded_from_record

Memory = tuple[LoggerProvider, InMemoryLogRecordExporter]


@pytest.fixture
def provider() -> Memory:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    return provider, memory


def _lifecycle_event() -> Event:
    return Event(
        event_type="workflow.lifecycle",
        event_name=ApplicationEventNames.WORKFLOW_START.value,
        data={"workflow_name": "DataIngestion"},
    )


async def test_published_events_become_records_of_the_provider_with_the_trace_context(provider: Memory) -> None:
    logger_provider, memory = provider
    configure(AppEventsSettings(exporters=[]), exporters={"otel": OTelLogsExporter(logger_provider=logger_provider)})
    tracer = TracerProvider().get_tracer("test")
    event = _lifecycle_event()
    with tracer.start_as_current_span("work") as span:
        EventStore.publish(event)
    assert await EventStore.flush(5)

    [record] = [data.log_record for data in memory.get_finished_logs()]
    assert record.event_name == "workflow.lifecycle"
    assert json.loads(str(record.body))["event_id"] == event.event_id
    assert record.attributes is not None
    assert record.attributes["appevents.event_id"] == event.event_id
    assert record.attributes["appevents.event_name"] == "workflow_start"
    assert record.trace_id == span.get_span_context().trace_id
    assert EventStore.stats()["otel"].delivered == 1


def test_records_name_the_exporters_that_deliver_the_event_themselves(provider: Memory) -> None:
    logger_provider, memory = provider
    OTelLogsExporter(delivered_by=["segment", "dapr"], logger_provider=logger_provider).export_events(
        [encode_event(_lifecycle_event())]
    )

    [data] = memory.get_finished_logs()
    assert data.log_record.attributes is not None
    assert data.log_record.attributes["appevents.delivered_by"] == "segment,dapr"
    # An appevents exporter's OTel face skips the event it names; any other takes it, without the marker.
    assert encoded_from_record(data, exporter="segment") is None
    assert encoded_from_record(data, exporter="dapr") is None
    taken = encoded_from_record(data, exporter="other")
    assert taken is not None
    assert "appevents.delivered_by" not in taken.attributes
    assert encoded_from_record(data) is not None


def test_the_factory_names_every_other_configured_exporter() -> None:
    exporter = create_otel_exporter(AppEventsSettings(exporters=["segment", "otel", "local"]))
    assert exporter is not None
    assert exporter._delivered_attributes == {DELIVERED_BY_ATTRIBUTE: "segment,local"}


def test_without_a_provider_events_are_dropped_counted_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    exporter = OTelLogsExporter()  # the global provider: none is set in the test process
    with caplog.at_level(logging.WARNING, logger="appevents"):
        first = exporter.export_events([encode_event(_lifecycle_event())])
        second = exporter.export_events([encode_event(_lifecycle_event())])

    assert [reason for _, reason in first.dropped + second.dropped] == ["no_logger_provider"] * 2
    assert sum("no OpenTelemetry LoggerProvider" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ["local"]),
        ({"OTEL_LOGS_EXPORTER": "otlp"}, ["local"]),
        ({"OTEL_LOGS_EXPORTER": "otlp,appevents_segment"}, ["otel"]),
        ({"OTEL_LOGS_EXPORTER": "appevents_dapr", "OTEL_SDK_DISABLED": "TRUE"}, ["local"]),
        ({"OTEL_LOGS_EXPORTER": "appevents_dapr", "APPEVENTS_EXPORTERS": "dapr"}, ["dapr"]),
    ],
)
def test_the_default_exporters_follow_otel_logs_exporter(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: list[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert AppEventsSettings().exporters == expected


def test_otel_sdk_disabled_disables_a_named_otel_exporter(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with caplog.at_level(logging.WARNING, logger="appevents"):
        assert create_otel_exporter(AppEventsSettings(exporters=["otel"])) is None
    assert "OTEL_SDK_DISABLED=true" in caplog.text


def test_flush_and_shutdown_flush_the_provider_and_leave_it_running(provider: Memory) -> None:
    logger_provider, memory = provider
    exporter = OTelLogsExporter(logger_provider=logger_provider)
    exporter.export_events([encode_event(_lifecycle_event())])
    exporter.shutdown()
    exporter.export_events([encode_event(_lifecycle_event())])
    assert len(memory.get_finished_logs()) == 2  # the provider still takes records after our shutdown


def test_doctor_says_why_otel_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from appevents._doctor import run_checks

    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "appevents_segment")
    checks = {check.name: check for check in run_checks(1.0)}

    assert (
        "APPEVENTS_EXPORTERS=otel (default, as OTEL_LOGS_EXPORTER names appevents_segment)" in checks["settings"].detail
    )
    assert checks["otel logs pipeline"].ok


def test_doctor_says_when_no_configurator_would_build_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real = importlib.metadata.entry_points

    def without_configurators(**selection: str) -> importlib.metadata.EntryPoints:
        if selection.get("group") == "opentelemetry_configurator":
            return importlib.metadata.EntryPoints([])
        return real(**selection)

    monkeypatch.setattr(importlib.metadata, "entry_points", without_configurators)
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "appevents_segment")
    [check] = OTelLogsExporter().diagnose(1.0)
    assert not check.ok
    assert "pip install opentelemetry-distro" in check.fix


def test_doctor_notes_appevents_exporters_in_the_global_pipeline_that_get_no_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from appevents._doctor import passed, run_checks

    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "appevents_dapr")
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "local")
    checks = run_checks(1.0)
    [note] = [check for check in checks if check.name == "otel logs pipeline"]
    assert not note.ok and not note.required
    assert "has no 'otel'" in note.detail
    assert passed(checks)  # informational: it does not fail the doctor
