"""Configuration: one pydantic-settings object, read from the environment, overridable in code.

The Atlan application-sdk's configuration names keep working (``APP_TENANT_ID``, ``APPLICATION_NAME``); the
``APPEVENTS_`` names take precedence. Its Dapr names (``EVENT_STORE_NAME``, ``DAPR_BINDING_OPERATION_CREATE``)
are read by the Dapr exporter's own settings; ``ATLAN_BASE_URL`` is read by nothing (the token endpoint is
``APPEVENTS_AUTH_TOKEN_URL``) and, like any unknown variable, ignored.
The OpenTelemetry standard ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` are honoured for the resource.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from appevents._otel_env import default_exporters

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "DEFAULT_REDACT_KEYS", "AppEventsSettings"]

DEFAULT_MAX_EVENT_BYTES = 256 * 1024
#: What ``APPEVENTS_REDACT_KEYS`` holds by default: keys that name credentials in the wild.
DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "authorization",
    "api_key",
    "apikey",
    "x-api-key",
    "cookie",
    "set-cookie",
    "private_key",
)


class AppEventsSettings(BaseSettings):
    """Everything the core pipeline needs. Exporter distributions read their own ``APPEVENTS_<NAME>_*`` settings."""

    model_config = SettingsConfigDict(env_prefix="APPEVENTS_", extra="ignore", populate_by_name=True)

    application_name: str = Field(
        default="default",
        validation_alias=AliasChoices("APPEVENTS_APPLICATION_NAME", "APPLICATION_NAME", "OTEL_SERVICE_NAME"),
    )
    tenant_id: str = Field(default="default", validation_alias=AliasChoices("APPEVENTS_TENANT_ID", "APP_TENANT_ID"))
    #: Exporter names (any case), looked up in the ``appevents.exporters`` entry-point group. Unset or empty:
    #: ``local``, or ``otel`` when ``OTEL_LOGS_EXPORTER`` names an appevents exporter (see
    #: :mod:`appevents._otel_route`); ``none``: no exporter.
    exporters: Annotated[list[str], NoDecode] = Field(default_factory=default_exporters)
    local_path: Path = Path(".appevents/events.db")
    max_event_bytes: int = Field(default=DEFAULT_MAX_EVENT_BYTES, gt=0)
    #: Prefix put before the event type to form ``metadata.topic_name`` (empty: the topic is the event type).
    topic_prefix: str = ""
    # Each exporter's queue and batching (as OTel's BatchLogRecordProcessor knobs). There is no linger: an idle
    # exporter sends an event as soon as it is published, a busy one batches what accumulated meanwhile (up to
    # max_export_batch_size); schedule_delay_ms only paces an idle channel's housekeeping (a missed wake-up, a
    # retry) — events never wait for it.
    max_queue_size: int = Field(default=20_000, gt=0)
    max_export_batch_size: int = Field(default=512, gt=0)
    schedule_delay_ms: int = Field(default=200, gt=0)
    #: Durable mode: append every event to this SQLite spool before export (see README, "Delivery").
    spool_path: Path | None = None
    #: Bound of the spool's event bytes; past it, new events are refused and counted (``spool_full``).
    spool_max_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    #: Group commit: the spool writer commits what was published at most this often (callers never wait for it).
    spool_commit_interval_ms: int = Field(default=10, gt=0)
    #: ``normal``: a commit survives the death of the process; ``full``: also a power cut (an fsync per commit).
    spool_sync: Literal["normal", "full"] = "normal"
    #: Keys of ``data`` (at any depth, case-insensitive) whose values are replaced by ``"[REDACTED]"`` at publish,
    #: before any exporter or span event sees them. ``APPEVENTS_REDACT_KEYS=`` (empty) turns redaction off.
    redact_keys: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_REDACT_KEYS))
    #: Self-metrics: how many distinct event types get their own ``event.type`` attribute on
    #: ``appevents.events.published`` (the rest count as ``other``); 0 (default): no such attribute.
    metrics_event_type_limit: int = Field(default=0, ge=0)
    #: Also record each event as a span event on the current recording span.
    span_events: bool = True
    #: When SIGTERM has no handler, exit through SystemExit so queued events are drained (see README).
    handle_sigterm: bool = True

    @field_validator("exporters", mode="before")
    @classmethod
    def _split_exporters(cls, value: object) -> object:
        # As OpenTelemetry reads its OTEL_*_EXPORTER variables: names ignore case, an empty variable means unset
        # (the default), `none` means no exporter.
        if isinstance(value, str):
            names = [name.strip().lower() for name in value.split(",") if name.strip()]
            if not names:
                return default_exporters()
            return [name for name in names if name != "none"]
        if isinstance(value, list | tuple):
            return [name.strip().lower() if isinstance(name, str) else name for name in value]
        return value

    @field_validator("redact_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value
