"""The pure part: which events become which ``track`` call, and what the settings accept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from segment_events import business_event, lifecycle_event

from appevents import ApplicationEventNames, WorkflowStates
from appevents_exporter_segment import DEFAULT_EVENT_NAMES, SegmentExporterSettings, track_for_event

pytestmark = pytest.mark.timeout(10)


def _settings(**values: object) -> SegmentExporterSettings:
    return SegmentExporterSettings.model_validate({"write_key": "k", **values})


def _track(event: object, timestamp_ns: int | None = 1_764_000_000_123_000_000, **values: object) -> object:
    return track_for_event(
        event,  # type: ignore[arg-type]
        timestamp_ns,
        _settings(**values),
        default_application="app",
        default_tenant="tenant",
    )


def test_default_mapping_is_the_application_sdks() -> None:
    assert DEFAULT_EVENT_NAMES == {
        "workflow_start": "workflow_started",
        "workflow_end": "workflow_completed",
        "activity_start": "activity_started",
        "activity_end": "activity_ended",
    }


def test_events_without_a_mapped_lifecycle_name_are_not_tracked() -> None:
    assert _track(business_event()) is None
    assert _track(lifecycle_event(ApplicationEventNames.WORKER_START)) is None
    assert _track(lifecycle_event(ApplicationEventNames.WORKFLOW_START), event_names={"workflow_start": ""}) is None


def test_metadata_state_wins_over_a_data_value_of_the_same_name() -> None:
    event = lifecycle_event(
        ApplicationEventNames.WORKFLOW_END,
        state=WorkflowStates.CANCELLED,
        data={"workflow_state": "running", "duration_ms": 12, "rows": 3, "tags": ["a"]},
    )
    track = track_for_event(event, 1, _settings(), default_application="app", default_tenant="tenant")
    assert track is not None
    assert track.properties["workflow_state"] == "cancelled"
    assert track.properties["duration_ms"] == 12
    assert track.properties["rows"] == 3
    assert "tags" not in track.properties


def test_timestamp_is_the_publish_time_in_utc() -> None:
    event = lifecycle_event(ApplicationEventNames.WORKFLOW_START)
    track = track_for_event(event, 1_764_000_000_250_000_000, _settings(), default_application="a", default_tenant="t")
    assert track is not None
    assert track.timestamp == datetime(2025, 11, 24, 16, 0, 0, 250_000, tzinfo=UTC)


def test_timestamp_falls_back_to_created_timestamp() -> None:
    event = lifecycle_event(ApplicationEventNames.WORKFLOW_START)
    event.metadata.created_timestamp = 1_764_000_000
    track = track_for_event(event, None, _settings(), default_application="a", default_tenant="t")
    assert track is not None
    assert track.timestamp == datetime(2025, 11, 24, 16, 0, 0, tzinfo=UTC)


def test_user_id_uses_event_tenant_then_defaults() -> None:
    with_tenant = lifecycle_event(ApplicationEventNames.WORKFLOW_START, tenant="t-9")
    without = lifecycle_event(ApplicationEventNames.WORKFLOW_START)
    settings = _settings(user_id_template="{tenant}/{application}")
    first = track_for_event(with_tenant, 1, settings, default_application="app", default_tenant="dflt")
    second = track_for_event(without, 1, settings, default_application="app", default_tenant="dflt")
    assert first is not None and second is not None
    assert (first.user_id, second.user_id) == ("t-9/app", "dflt/app")
    assert first.message_id == with_tenant.event_id


def test_event_name_overrides_merge_over_the_defaults() -> None:
    settings = _settings(event_names={"activity_end": "Activity Done"})
    assert settings.event_names["activity_end"] == "Activity Done"
    assert settings.event_names["workflow_start"] == "workflow_started"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("event_names", {"order_received": "x"}, "not lifecycle event names"),
        ("user_id_template", "{application}:{user}", "placeholders"),
        ("user_id_template", "{", "not a format string"),
        ("host", "api.segment.io", "http:// or https://"),
        ("batch_size", 0, "greater than 0"),
    ],
)
def test_bad_settings_name_the_field_and_the_fix(field: str, value: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as raised:
        _settings(**{field: value})
    assert field in str(raised.value)
    assert fragment in str(raised.value)


def test_settings_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_SEGMENT_WRITE_KEY", "from-env")
    monkeypatch.setenv("APPEVENTS_SEGMENT_HOST", "http://127.0.0.1:9/")
    monkeypatch.setenv("APPEVENTS_SEGMENT_BATCH_SIZE", "7")
    monkeypatch.setenv("APPEVENTS_SEGMENT_UPLOAD_INTERVAL_MS", "250")
    monkeypatch.setenv("APPEVENTS_SEGMENT_TIMEOUT_MS", "3000")
    monkeypatch.setenv("APPEVENTS_SEGMENT_MAX_RETRIES", "4")
    settings = SegmentExporterSettings()
    assert settings.write_key is not None and settings.write_key.get_secret_value() == "from-env"
    assert settings.client_options() == {
        "host": "http://127.0.0.1:9",
        "upload_size": 7,
        "upload_interval": 0.25,
        "timeout": 3.0,
        "max_retries": 4,
        "max_total_backoff_duration": 300.0,
        "max_queue_size": 10_000,
    }
