"""The real pipeline, configured for a test, and the exporter instance it runs.

A pytest plugin (``pytest_plugins`` in ``tests/conftest.py``): the :func:`configured_pipeline` fixture configures and,
after the test, shuts down; :func:`exporter_in` digs a configured exporter out of the pipeline, checked for its class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import pytest
from opentelemetry.sdk._logs import LogRecordProcessor

from appevents import AppEventsSettings, EventStore, Pipeline, configure

__all__ = ["ConfigurePipeline", "configured_pipeline", "exporter_in"]

ExporterClass = TypeVar("ExporterClass")

#: ``configure_pipeline("segment", "memory", processors=[...])`` → the configured :class:`Pipeline`.
ConfigurePipeline = Callable[..., Pipeline]


def exporter_in(pipeline: Pipeline, name: str, kind: type[ExporterClass]) -> ExporterClass:
    """The exporter ``pipeline`` runs as ``name``, which must be a ``kind``."""
    exporter = pipeline.exporter(name)
    assert isinstance(exporter, kind), f"exporter {name!r} is a {type(exporter).__name__}, not a {kind.__name__}"
    return exporter


@pytest.fixture
def configured_pipeline() -> Iterator[ConfigurePipeline]:
    """Configure the real pipeline with the exporters named (built from the environment, like an application's), and
    extra OTel log processors; after the test, shut it down within 5 s (a destination a test left down is not waited
    for)."""

    def configure_pipeline(*exporters: str, processors: Sequence[LogRecordProcessor] = ()) -> Pipeline:
        return configure(AppEventsSettings(exporters=list(exporters)), processors=processors)

    yield configure_pipeline
    EventStore.shutdown(timeout_s=5)
