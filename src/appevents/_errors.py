"""The small error hierarchy of appevents. ``publish_event`` never raises; these come from ``configure()``."""

from __future__ import annotations

__all__ = ["AppEventsError", "ConfigurationError"]


class AppEventsError(Exception):
    """Base class of every error appevents raises on purpose."""


class ConfigurationError(AppEventsError):
    """The configuration names something that cannot be built (unknown exporter, missing package, bad value)."""
