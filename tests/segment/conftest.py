"""Fixtures for the Segment exporter tests: a Segment-compatible receiver and the environment pointing at it.

No ``__init__.py`` here on purpose: a package named ``segment`` under ``tests/`` would shadow
``segment.analytics``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from appevents import Pipeline
from appevents_exporter_segment import SegmentExporter
from support.pipelines import ConfigurePipeline, exporter_in
from support.segment_receiver import SegmentReceiver

DAPR_VARIABLES = (
    "DAPR_HTTP_ENDPOINT",
    "DAPR_GRPC_ENDPOINT",
    "DAPR_HTTP_PORT",
    "DAPR_GRPC_PORT",
    "DAPR_API_TOKEN",
    "APPEVENTS_DAPR_ENDPOINT",
)


@pytest.fixture
def write_key() -> str:
    # Distinctive, so a leak anywhere in logs is unmistakable.
    return f"wk-secret-{uuid.uuid4().hex}"


@pytest.fixture
def segment_receiver(write_key: str) -> Iterator[SegmentReceiver]:
    with SegmentReceiver(write_key) as receiver:
        yield receiver


@pytest.fixture
def segment_env(monkeypatch: pytest.MonkeyPatch, segment_receiver: SegmentReceiver, write_key: str) -> None:
    """Point the exporter at the receiver with fast batching; no Dapr sidecar is configured."""
    for name in DAPR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APPEVENTS_APPLICATION_NAME", "billing")
    monkeypatch.setenv("APPEVENTS_TENANT_ID", "acme")
    monkeypatch.setenv("APPEVENTS_SCHEDULE_DELAY_MS", "20")
    monkeypatch.setenv("APPEVENTS_SEGMENT_WRITE_KEY", write_key)
    monkeypatch.setenv("APPEVENTS_SEGMENT_HOST", segment_receiver.url)
    monkeypatch.setenv("APPEVENTS_SEGMENT_UPLOAD_INTERVAL_MS", "50")
    monkeypatch.setenv("APPEVENTS_SEGMENT_TIMEOUT_MS", "5000")
    monkeypatch.setenv("APPEVENTS_SEGMENT_MAX_TOTAL_BACKOFF_MS", "10000")
    monkeypatch.setenv("APPEVENTS_SEGMENT_SHUTDOWN_TIMEOUT_MS", "10000")


@pytest.fixture
def configure_segment(segment_env: None, configured_pipeline: ConfigurePipeline) -> ConfigurePipeline:
    """``configure_segment("memory", processors=[...])``: the real pipeline with ``segment`` plus extra exporters."""
    return partial(configured_pipeline, "segment")


@pytest.fixture
def exporter_of() -> Callable[[Pipeline], SegmentExporter]:
    """The :class:`SegmentExporter` a configured pipeline runs."""
    return lambda pipeline: exporter_in(pipeline, "segment", SegmentExporter)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every log record at DEBUG, the segment library's included."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="segment")
    return caplog
