"""The write key never shows: not in logs (the segment library's DEBUG body dump included), reprs or errors."""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Callable

import pytest
from segment_events import lifecycle_event

from appevents import ApplicationEventNames, ConfigurationError, EventStore, Pipeline
from appevents_exporter_segment import SegmentExporter, SegmentExporterSettings
from appevents_exporter_segment._redaction import SecretRedactingFilter
from support.segment_receiver import SegmentReceiver

pytestmark = pytest.mark.timeout(30)


def _forms(write_key: str) -> list[str]:
    return [write_key, base64.b64encode(f"{write_key}:".encode()).decode()]


def test_write_key_never_appears_in_logs_on_success_retry_and_error_paths(
    configure_segment: Callable[..., Pipeline],
    segment_receiver: SegmentReceiver,
    write_key: str,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    segment_receiver.respond_with(503, 400)  # a retry, then a refusal, then success
    configure_segment()
    for name in (ApplicationEventNames.WORKFLOW_START, ApplicationEventNames.WORKFLOW_END):
        EventStore.publish(lifecycle_event(name))
        assert EventStore.flush_sync(10)
    EventStore.shutdown()

    assert [r.status for r in segment_receiver.requests] == [503, 400, 200]
    assert segment_receiver.requests[-1].body["writeKey"] == write_key  # type: ignore[index]  # sent, not logged
    # The library did dump the request body (which holds the key) at DEBUG, and the dump was redacted.
    dumps = [r.getMessage() for r in debug_logs.records if r.getMessage().startswith("making request")]
    assert len(dumps) == 3
    assert all('"writeKey": "**********"' in dump for dump in dumps)
    assert any(r.name == "appevents.segment" and r.levelno == logging.ERROR for r in debug_logs.records)
    for form in _forms(write_key):
        assert form not in debug_logs.text
        assert not [r for r in debug_logs.records if form in r.getMessage()]


def test_redacting_filter_covers_arguments_and_tracebacks(write_key: str) -> None:
    redactor = SecretRedactingFilter(write_key)
    record = logging.LogRecord("segment", logging.ERROR, __file__, 1, "auth %s / %s", tuple(_forms(write_key)), None)
    try:
        raise RuntimeError(f"server echoed {write_key}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert redactor.filter(record)
    formatted = logging.Formatter().format(record)
    assert "**********" in formatted and "server echoed" in formatted
    for form in _forms(write_key):
        assert form not in formatted
    assert write_key not in repr(redactor)


def test_write_key_is_not_in_reprs_or_configuration_errors(
    segment_env: None, write_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = SegmentExporterSettings()
    exporter = SegmentExporter(settings)
    try:
        for text in (repr(exporter), str(exporter), repr(settings), str(settings.model_dump())):
            assert write_key not in text
    finally:
        exporter.shutdown()

    monkeypatch.setenv("APPEVENTS_SEGMENT_HOST", "not-a-url")
    with pytest.raises(ConfigurationError) as raised:
        SegmentExporter()
    assert "APPEVENTS_SEGMENT_HOST" in str(raised.value)
    assert write_key not in str(raised.value)
