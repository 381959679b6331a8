"""Shared test setup: every test starts with an unconfigured EventStore and a private local event log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appevents import EventStore

# Fixtures of tests/support: the self-metrics tests' reader, the real pipeline configured for a test, and the HTTP
# receiver behind the Dapr stand-in's binding.
pytest_plugins = ["pytester", "support.metric_points", "support.pipelines", "support.receivers"]


@pytest.fixture(autouse=True)
def _isolated_event_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("APPEVENTS_LOCAL_PATH", str(tmp_path / "events.db"))
    for name in (
        "APPEVENTS_EXPORTERS",
        "APPEVENTS_APPLICATION_NAME",
        "APPEVENTS_TENANT_ID",
        "OTEL_SERVICE_NAME",
        # They choose the `otel` exporter when APPEVENTS_EXPORTERS is unset (appevents._otel_env).
        "OTEL_LOGS_EXPORTER",
        "OTEL_SDK_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    EventStore.shutdown()
    yield
    EventStore.shutdown()
