"""Configuration names are a contract: APPEVENTS_*, the application-sdk's names, and the OTel standard variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from appevents import AppEventsSettings, Event, EventStore, configure
from appevents.testing import CapturedEvents
from appevents_exporter_dapr import DaprExporterSettings


def test_appevents_names_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_APPLICATION_NAME", "orders")
    monkeypatch.setenv("APPEVENTS_TENANT_ID", "acme")
    monkeypatch.setenv("APPEVENTS_EXPORTERS", " local, console ,")
    monkeypatch.setenv("APPEVENTS_LOCAL_PATH", "/tmp/x/events.db")
    monkeypatch.setenv("APPEVENTS_MAX_EVENT_BYTES", "1000")
    settings = AppEventsSettings()
    assert (settings.application_name, settings.tenant_id) == ("orders", "acme")
    assert settings.exporters == ["local", "console"]
    assert settings.local_path == Path("/tmp/x/events.db")
    assert settings.max_event_bytes == 1000


def test_the_application_sdk_names_still_work_and_ours_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLICATION_NAME", "sdk-app")
    monkeypatch.setenv("APP_TENANT_ID", "sdk-tenant")
    monkeypatch.setenv("EVENT_STORE_NAME", "events")
    monkeypatch.setenv("DAPR_BINDING_OPERATION_CREATE", "post")
    monkeypatch.setenv("ATLAN_BASE_URL", "https://example.invalid")
    settings = AppEventsSettings()
    assert (settings.application_name, settings.tenant_id) == ("sdk-app", "sdk-tenant")
    dapr = DaprExporterSettings()  # the application-sdk's Dapr names are the Dapr exporter's
    assert (dapr.binding, dapr.operation) == ("events", "post")
    assert "base_url" not in DaprExporterSettings.model_fields  # read by nothing, so not a setting (and ignored)
    monkeypatch.setenv("APPEVENTS_APPLICATION_NAME", "ours")
    assert AppEventsSettings().application_name == "ours"


def test_otel_service_name_and_resource_attributes_shape_the_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,team=data")
    pipeline = configure(AppEventsSettings(exporters=[]))
    attributes = pipeline.resource.attributes
    assert attributes["service.name"] == "svc"
    assert attributes["deployment.environment"] == "staging" and attributes["team"] == "data"


def test_code_settings_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_APPLICATION_NAME", "from-env")
    capture = CapturedEvents()
    configure(AppEventsSettings(exporters=[], application_name="from-code"), processors=[capture])
    EventStore.publish(Event(event_type="a.b"))
    assert capture[0].metadata.application_name == "from-code"


def test_a_bad_value_is_a_validation_error_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_MAX_EVENT_BYTES", "-5")
    with pytest.raises(ValueError, match="max_event_bytes"):
        AppEventsSettings()


def test_the_console_exporter_prints_each_event_as_an_otel_log_record() -> None:
    import json
    import os
    import subprocess
    import sys

    script = (
        "from appevents import Event, EventStore\n"
        "EventStore.publish(Event(event_type='order.received', data={'order_id': 'o-7'}))\n"
    )
    env = {**os.environ, "APPEVENTS_EXPORTERS": "console"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["event_name"] == "order.received"
    assert json.loads(record["body"])["data"] == {"order_id": "o-7"}
