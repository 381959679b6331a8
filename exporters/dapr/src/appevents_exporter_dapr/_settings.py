"""``APPEVENTS_DAPR_*`` settings of the Dapr exporter, and the names it shares with the Atlan application-sdk.

The application-sdk ``EventStore`` names its binding and operation ``EVENT_STORE_NAME`` and
``DAPR_BINDING_OPERATION_CREATE``; an application moving from it keeps its configuration. Precedence, first set
wins: ``APPEVENTS_DAPR_BINDING``, ``APPEVENTS_EVENT_STORE_NAME``, ``EVENT_STORE_NAME`` (and likewise
``APPEVENTS_DAPR_OPERATION``, ``APPEVENTS_BINDING_OPERATION``, ``DAPR_BINDING_OPERATION_CREATE``).

The sidecar's address and API token are Dapr's own variables (``DAPR_GRPC_ENDPOINT``, ``DAPR_HTTP_ENDPOINT``,
``DAPR_API_TOKEN``), read by the Dapr SDK; they are not repeated here. OAuth2 is ``APPEVENTS_AUTH_*``
(:class:`~appevents_exporter_dapr.AuthSettings`).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DaprExporterSettings", "DaprMode"]


class DaprMode(StrEnum):
    """How events reach the sidecar."""

    #: One ``invoke_binding`` per event (the application-sdk ``EventStore`` wire contract), many in flight.
    BINDING = "binding"
    #: One ``invoke_binding`` per chunk of events, ``data`` a JSON array of them.
    BATCH = "batch"
    #: ``publish_events`` (bulk) to a pub/sub component, topic = the event's ``metadata.topic_name``.
    PUBSUB = "pubsub"


class DaprExporterSettings(BaseSettings):
    """Everything the Dapr exporter reads from ``APPEVENTS_DAPR_*`` (and the application-sdk names); overridable
    in code by field name."""

    model_config = SettingsConfigDict(env_prefix="APPEVENTS_DAPR_", extra="ignore", populate_by_name=True)

    mode: DaprMode = DaprMode.BINDING
    #: Output binding name (``binding`` and ``batch`` modes).
    binding: str = Field(
        default="eventstore",
        validation_alias=AliasChoices("APPEVENTS_DAPR_BINDING", "APPEVENTS_EVENT_STORE_NAME", "EVENT_STORE_NAME"),
    )
    #: Binding operation (``binding`` and ``batch`` modes).
    operation: str = Field(
        default="create",
        validation_alias=AliasChoices(
            "APPEVENTS_DAPR_OPERATION", "APPEVENTS_BINDING_OPERATION", "DAPR_BINDING_OPERATION_CREATE"
        ),
    )
    #: Pub/sub component name (``pubsub`` mode).
    pubsub: str = "pubsub"
    #: Topic for events without ``metadata.topic_name`` (``pubsub`` mode; unset: the event type).
    default_topic: str | None = None
    #: Calls to the sidecar in flight at once.
    max_in_flight: int = Field(default=32, gt=0, le=1024)
    #: Extra binding metadata sent with every call, as JSON: ``{"X-Api-Key": "..."}``. Dapr's ``bindings.http``
    #: sends only keys starting with a capital letter as HTTP headers. Values are secrets (they often are API
    #: keys): ``repr``/logs show the keys only; :meth:`metadata_values` gives what is sent.
    metadata: dict[str, SecretStr] = Field(default_factory=dict)
    #: Upper bound of one ``batch`` call's JSON array (the sidecar's gRPC limit is 4 MiB by default).
    batch_max_bytes: int = Field(default=3 * 1024 * 1024, gt=0)
    #: Deadline of one call to the sidecar.
    call_timeout_s: float = Field(default=10.0, gt=0)
    #: Retry of transient failures (sidecar unavailable, deadline exceeded, throttling, no token yet, a token the
    #: endpoint rejected): exponential backoff with "equal jitter" (half the delay fixed, half random) from
    #: ``retry_initial_backoff_s`` up to ``retry_max_backoff_s``, for up to ``retry_max_elapsed_s`` per export
    #: batch; events still failing then are returned to the engine as ``retry``.
    retry_initial_backoff_s: float = Field(default=0.1, gt=0)
    retry_max_backoff_s: float = Field(default=2.0, gt=0)
    retry_max_elapsed_s: float = Field(default=60.0, ge=0)
    #: Re-check of a component the sidecar did not list: after this delay, doubling up to the maximum.
    probe_initial_backoff_s: float = Field(default=1.0, gt=0)
    probe_max_backoff_s: float = Field(default=60.0, gt=0)
    #: Timeout of the sidecar health probe made before the Dapr client is created.
    health_probe_timeout_s: float = Field(default=1.0, gt=0)

    def metadata_values(self) -> dict[str, str]:
        """The static metadata as sent to the sidecar (secret values revealed)."""
        return {key: value.get_secret_value() for key, value in self.metadata.items()}
