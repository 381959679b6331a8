"""appevents exporter for Dapr: events to the sidecar's output binding (``eventstore``/``create``), as JSON
arrays, or to a pub/sub component; with OAuth2 bearer auth (``APPEVENTS_AUTH_*``).

Registered as ``dapr`` in ``appevents.exporters`` (``APPEVENTS_EXPORTERS=dapr``) and as ``appevents_dapr`` in
``opentelemetry_logs_exporter`` (``OTEL_LOGS_EXPORTER=appevents_dapr``). The names below are the whole public
surface; the modules behind them are private.
"""

from appevents_exporter_dapr._auth import (
    AuthError,
    AuthSettings,
    ClientCredentialsTokenProvider,
    HeaderProvider,
    RefreshableHeaderProvider,
    StaticHeaderProvider,
    TokenProviderStats,
    header_provider_from_settings,
)
from appevents_exporter_dapr._exporter import DaprExporter, DaprExporterStats, create_dapr_exporter
from appevents_exporter_dapr._settings import DaprExporterSettings, DaprMode

__all__ = [
    "AuthError",
    "AuthSettings",
    "ClientCredentialsTokenProvider",
    "DaprExporter",
    "DaprExporterSettings",
    "DaprExporterStats",
    "DaprMode",
    "HeaderProvider",
    "RefreshableHeaderProvider",
    "StaticHeaderProvider",
    "TokenProviderStats",
    "create_dapr_exporter",
    "header_provider_from_settings",
]
