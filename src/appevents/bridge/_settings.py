"""The bridge's own settings (``APPEVENTS_BRIDGE_*``); the exporters it delivers to are configured as usual."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["OFF", "BridgeSettings", "parse_endpoint"]

OFF = ("", "off", "none")


def parse_endpoint(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port); None for ``off``."""
    value = value.strip()
    if value.lower() in OFF:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (or 'off')")
    return host.strip("[]") or "0.0.0.0", int(port)


class BridgeSettings(BaseSettings):
    """Where ``appevents bridge`` listens and what it lets in. Secrets are ``SecretStr``: never printed."""

    model_config = SettingsConfigDict(env_prefix="APPEVENTS_BRIDGE_", extra="ignore")

    #: OTLP/HTTP listener (``POST /v1/logs``), ``off`` for none.
    http: str = "127.0.0.1:4318"
    #: OTLP/gRPC listener (``LogsService/Export``), ``off`` for none.
    grpc: str = "127.0.0.1:4317"
    #: When set, every request needs ``Authorization: Bearer <token>``.
    token: SecretStr | None = None
    #: TLS for both listeners (PEM files; both or neither).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Mutual TLS: clients must present a certificate issued by one of these CAs (PEM; needs the two above).
    tls_client_ca_file: Path | None = None
    #: Largest request body, after decompression (413 / ``RESOURCE_EXHAUSTED`` beyond; nothing more is read).
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    #: Requests worked on at once per listener; more get 429 / ``RESOURCE_EXHAUSTED`` at once. With the body
    #: limit this bounds the bridge's memory: about ``2 * max_concurrent_requests * max_body_bytes``.
    max_concurrent_requests: int = Field(default=8, gt=0)
    #: Open HTTP connections; more are closed at once.
    max_connections: int = Field(default=64, gt=0)
    #: How long a request waits for its events to be durable or delivered before it is answered "retry".
    ack_timeout_s: float = Field(default=8.0, gt=0)
    #: On SIGTERM/SIGINT: how long requests in flight and then the exporters' queues get to finish.
    drain_timeout_s: float = Field(default=15.0, gt=0)
    #: An HTTP connection idle this long (or a client this slow to send) is closed.
    idle_timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("http", "grpc")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parse_endpoint(value)
        return value

    @field_validator("token")
    @classmethod
    def _no_empty_token(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None or not value.get_secret_value().strip() else value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both a certificate and a key file (APPEVENTS_BRIDGE_TLS_CERT_FILE/_KEY_FILE)")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "client certificates (APPEVENTS_BRIDGE_TLS_CLIENT_CA_FILE) need TLS: set "
                "APPEVENTS_BRIDGE_TLS_CERT_FILE and APPEVENTS_BRIDGE_TLS_KEY_FILE too"
            )
        if parse_endpoint(self.http) is None and parse_endpoint(self.grpc) is None:
            raise ValueError("both listeners are off: set APPEVENTS_BRIDGE_HTTP or APPEVENTS_BRIDGE_GRPC")
        return self
