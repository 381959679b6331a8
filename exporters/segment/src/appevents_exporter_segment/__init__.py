"""appevents exporter for Segment: workflow and activity lifecycle events as Segment ``track`` calls.

Enable with ``APPEVENTS_EXPORTERS=segment`` (plus any others) and ``APPEVENTS_SEGMENT_WRITE_KEY``; or, with
``opentelemetry-instrument``, ``OTEL_LOGS_EXPORTER=appevents_segment``. Only events whose ``event_name`` is a
mapped lifecycle name are sent (``workflow_start`` → ``workflow_started``, ``workflow_end`` →
``workflow_completed``, ``activity_start`` → ``activity_started``, ``activity_end`` → ``activity_ended``),
one ``userId`` per application and tenant, ``messageId`` = event id.
See :mod:`appevents_exporter_segment._mapping` for the full mapping.
"""

from appevents_exporter_segment._exporter import SegmentExporter, SegmentExporterStats, create_segment_exporter
from appevents_exporter_segment._mapping import SegmentTrack, track_for_event
from appevents_exporter_segment._settings import (
    DEFAULT_EVENT_NAMES,
    DEFAULT_HOST,
    DEFAULT_USER_ID_TEMPLATE,
    SegmentExporterSettings,
)

#: Former name of :class:`SegmentExporterStats` (the Dapr exporter's is ``DaprExporterStats``).
SegmentExportStats = SegmentExporterStats

__all__ = [
    "DEFAULT_EVENT_NAMES",
    "DEFAULT_HOST",
    "DEFAULT_USER_ID_TEMPLATE",
    "SegmentExporter",
    "SegmentExporterSettings",
    "SegmentExporterStats",
    "SegmentTrack",
    "create_segment_exporter",
    "track_for_event",
]
