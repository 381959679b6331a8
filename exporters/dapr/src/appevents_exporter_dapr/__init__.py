"""appevents exporter for Dapr: events to the sidecar's output binding (``eventstore``/``create``), as JSON
arrays, or to a pub/sub component; with OAuth2 bearer auth from :mod:`appevents.auth`.

Registered as ``dapr`` in ``appevents.exporters`` (``APPEVENTS_EXPORTERS=dapr``) and as ``appevents_dapr`` in
``opentelemetry_logs_exporter`` (``OTEL_LOGS_EXPORTER=appevents_dapr``).
"""

from appevents_exporter_dapr.exporter import DaprExporter, DaprExporterStats, create_dapr_exporter
from appevents_exporter_dapr.settings import DaprExporterSettings, DaprMode

__all__ = ["DaprExporter", "DaprExporterSettings", "DaprExporterStats", "DaprMode", "create_dapr_exporter"]
