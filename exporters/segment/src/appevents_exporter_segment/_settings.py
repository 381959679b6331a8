"""``SegmentExporterSettings``: the Segment exporter's configuration, read from ``APPEVENTS_SEGMENT_*``."""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from appevents import ApplicationEventNames
from appevents.exporting import safe_url

__all__ = ["DEFAULT_EVENT_NAMES", "DEFAULT_HOST", "DEFAULT_USER_ID_TEMPLATE", "SegmentExporterSettings"]

DEFAULT_HOST = "https://api.segment.io"

#: The Atlan application-sdk's mapping from lifecycle ``event_name`` to the Segment event name.
DEFAULT_EVENT_NAMES: dict[str, str] = {
    ApplicationEventNames.WORKFLOW_START.value: "workflow_started",
    ApplicationEventNames.WORKFLOW_END.value: "workflow_completed",
    ApplicationEventNames.ACTIVITY_START.value: "activity_started",
    ApplicationEventNames.ACTIVITY_END.value: "activity_ended",
}

#: One userId per application and tenant: a single fixed userId hot-shards Segment's per-user partitioning.
DEFAULT_USER_ID_TEMPLATE = "{application}:{tenant}"
USER_ID_PLACEHOLDERS = frozenset({"application", "tenant"})

_LIFECYCLE_NAMES = frozenset(name.value for name in ApplicationEventNames)

#: The segment library's longest single backoff between two attempts (``calculate_backoff_delay``).
_LONGEST_BACKOFF_S = 60.0


class SegmentExporterSettings(BaseSettings):
    """Settings of the Segment exporter. Without a write key the exporter is disabled.

    ``event_names`` is merged over :data:`DEFAULT_EVENT_NAMES` (``APPEVENTS_SEGMENT_EVENT_NAMES`` is JSON, e.g.
    ``{"workflow_end": "Workflow Finished", "worker_start": "worker_started"}``); mapping a name to ``""`` stops it
    from being sent. Only lifecycle names (:class:`~appevents.ApplicationEventNames`) may be mapped.
    """

    model_config = SettingsConfigDict(env_prefix="APPEVENTS_SEGMENT_", extra="ignore")

    write_key: SecretStr | None = None
    host: str = DEFAULT_HOST
    #: Messages per ``/v1/batch`` request (the library's ``upload_size``).
    batch_size: int = Field(default=100, gt=0, le=2_500)
    #: How long the library's consumer waits to fill a batch before sending what it has.
    upload_interval_ms: int = Field(default=500, gt=0)
    timeout_ms: int = Field(default=15_000, gt=0)
    max_retries: int = Field(default=10, ge=0)
    #: Cap on the time spent backing off for one batch before the library gives it up (returned for retry).
    max_total_backoff_ms: int = Field(default=300_000, ge=0)
    #: Bound of the library's in-memory queue; an export waits for room (up to its bound).
    max_queue_size: int = Field(default=10_000, gt=0)
    #: How long ``shutdown()`` waits for messages still queued outside a running export to be delivered.
    shutdown_timeout_ms: int = Field(default=10_000, ge=0)
    #: Bound of one ``export_events`` call's wait for Segment's answers; unset: the library's own retry window
    #: (see :meth:`export_timeout_s`). Messages unanswered by then are returned for retry.
    export_timeout_ms: int | None = Field(default=None, gt=0)
    event_names: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_EVENT_NAMES))
    user_id_template: str = DEFAULT_USER_ID_TEMPLATE

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # The host URL may carry credentials (user info, a query): shown as the doctor shows it.
        return [(name, safe_url(value) if name == "host" else value) for name, value in super().__repr_args__()]

    @field_validator("host")
    @classmethod
    def _host_is_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"APPEVENTS_SEGMENT_HOST {value!r} must be an http:// or https:// URL (default {DEFAULT_HOST})"
            )
        return value.rstrip("/")

    @field_validator("event_names", mode="after")
    @classmethod
    def _merge_over_defaults(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - _LIFECYCLE_NAMES)
        if unknown:
            raise ValueError(
                f"APPEVENTS_SEGMENT_EVENT_NAMES maps {', '.join(unknown)}, which are not lifecycle event names; "
                f"only {', '.join(sorted(_LIFECYCLE_NAMES))} are sent to Segment"
            )
        return {**DEFAULT_EVENT_NAMES, **value}

    @field_validator("user_id_template")
    @classmethod
    def _template_uses_known_placeholders(cls, value: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"APPEVENTS_SEGMENT_USER_ID_TEMPLATE {value!r} is not a format string: {exc}") from None
        unknown = sorted(fields - USER_ID_PLACEHOLDERS)
        if unknown or not value:
            raise ValueError(
                f"APPEVENTS_SEGMENT_USER_ID_TEMPLATE {value!r} may only use the placeholders "
                f"{{application}} and {{tenant}} and must not be empty (default {DEFAULT_USER_ID_TEMPLATE!r})"
            )
        return value

    def segment_event_name(self, event_name: str | None) -> str | None:
        """The Segment event name for a lifecycle ``event_name``; None when the event is not sent."""
        if event_name is None:
            return None
        return self.event_names.get(event_name) or None

    def user_id(self, application: str, tenant: str) -> str:
        return self.user_id_template.format(application=application, tenant=tenant)

    def export_timeout_s(self) -> float:
        """How long ``export_events`` waits for Segment's answers to one batch.

        ``export_timeout_ms`` when set; else the longest the library takes to answer a batch by itself: the batch
        wait (``upload_interval_ms``), a first request (``timeout_ms``), backing off for ``max_total_backoff_ms``,
        then one more backoff (at most 60 s in the library) and request. 390.5 s with the defaults.
        """
        if self.export_timeout_ms is not None:
            return self.export_timeout_ms / 1000
        return (self.upload_interval_ms + 2 * self.timeout_ms + self.max_total_backoff_ms) / 1000 + _LONGEST_BACKOFF_S

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``segment.analytics.Client`` (everything except the write key)."""
        return {
            "host": self.host,
            "upload_size": self.batch_size,
            "upload_interval": self.upload_interval_ms / 1000,
            "timeout": self.timeout_ms / 1000,
            "max_retries": self.max_retries,
            "max_total_backoff_duration": self.max_total_backoff_ms / 1000,
            "max_queue_size": self.max_queue_size,
        }
