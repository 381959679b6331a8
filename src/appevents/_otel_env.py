"""What the standard OpenTelemetry environment says about the logs pipeline, for the ``otel`` exporter's automatic
choice (:mod:`appevents._otel_route`). Read from ``os.environ`` at each call; no import of the SDK."""

from __future__ import annotations

import os

__all__ = [
    "OTEL_EXPORTER_NAME",
    "appevents_names_in_otel_logs_exporter",
    "default_exporters",
    "otel_logs_exporter_names",
    "otel_sdk_disabled",
]

#: The exporter's name in ``APPEVENTS_EXPORTERS``.
OTEL_EXPORTER_NAME = "otel"
#: ``OTEL_LOGS_EXPORTER`` names of appevents exporters start with this (``appevents_segment``, ``appevents_dapr``).
_APPEVENTS_OTEL_PREFIX = "appevents_"


def otel_sdk_disabled() -> bool:
    """``OTEL_SDK_DISABLED`` is ``true`` (case-insensitive, as the SDK reads it)."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def otel_logs_exporter_names() -> list[str]:
    """The names in ``OTEL_LOGS_EXPORTER`` (comma-separated; ``none`` and blanks left out)."""
    names = [name.strip() for name in os.environ.get("OTEL_LOGS_EXPORTER", "").split(",")]
    return [name for name in names if name and name.lower() != "none"]


def appevents_names_in_otel_logs_exporter() -> list[str]:
    """The appevents exporters ``OTEL_LOGS_EXPORTER`` names (``appevents_segment`` …)."""
    return [name for name in otel_logs_exporter_names() if name.lower().startswith(_APPEVENTS_OTEL_PREFIX)]


def default_exporters() -> list[str]:
    """What ``APPEVENTS_EXPORTERS`` means when it is unset: ``otel`` when ``OTEL_LOGS_EXPORTER`` names an appevents
    exporter (and the SDK is not disabled), else ``local``."""
    if appevents_names_in_otel_logs_exporter() and not otel_sdk_disabled():
        return [OTEL_EXPORTER_NAME]
    return ["local"]
