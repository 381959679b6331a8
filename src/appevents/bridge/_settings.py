"""The bridge's own settings (``APPEVENTS_BRIDGE_*``); the exporters it delivers to are configured as usual."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from appevents.bridge._decode import DEFAULT_MAX_RECORDS

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
    #: When set, every request needs ``Authorization: Bearer <token>`` (this token may publish for any tenant).
    token: SecretStr | None = None
    #: JSON file of tokens and the tenants (and applications) each may publish for (see the README); with it,
    #: every request needs one of its tokens (or ``token``) and events for other tenants are refused one by one.
    tokens_file: Path | None = None
    #: TLS for both listeners (PEM files; both or neither).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Mutual TLS: clients must present a certificate issued by one of these CAs (PEM; needs the two above).
    tls_client_ca_file: Path | None = None
    #: Largest request body, after decompression (413 / ``RESOURCE_EXHAUSTED`` beyond; nothing more is read).
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    #: Log records one request may carry (413 / ``RESOURCE_EXHAUSTED`` beyond), counted before any is decoded.
    max_records: int = Field(default=DEFAULT_MAX_RECORDS, gt=0)
    #: Requests worked on at once per listener; more get 429 / ``RESOURCE_EXHAUSTED`` at once. An HTTP body is
    #: read only once its request holds one of these slots, and one request at a time is decoded, so the bridge's
    #: memory for requests is about ``2 * max_concurrent_requests * max_body_bytes`` per listener plus one decode
    #: (at most about ``25 * max_body_bytes``): under 256 MiB with the defaults, whatever the bodies hold.
    max_concurrent_requests: int = Field(default=8, gt=0)
    #: Open HTTP connections (a waiting one costs no thread); at the limit a new connection closes the oldest one
    #: that is not inside a request, so connections that only hold a place never lock out one with a request.
    max_connections: int = Field(default=1024, gt=0)
    #: How long a request waits for its events to be durable or delivered before it is answered "retry".
    ack_timeout_s: float = Field(default=8.0, gt=0)
    #: On SIGTERM/SIGINT: how long requests in flight and then the exporters' queues get to finish.
    drain_timeout_s: float = Field(default=15.0, gt=0)
    #: Deadline of a whole HTTP header block, from the moment the connection waits for a request (its TLS
    #: handshake, or the end of the previous answer) to the last header line; then the connection is closed.
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: Deadline of a whole HTTP request body, however slowly it comes.
    body_timeout_s: float = Field(default=30.0, gt=0)
    #: Let a listener off loopback run without a token or client certificates (anyone who reaches it publishes).
    allow_unauthenticated: bool = False

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
        exposed = self.exposed_unauthenticated()
        if exposed and not self.allow_unauthenticated:
            where = " and ".join(f"APPEVENTS_BRIDGE_{name.upper()}={getattr(self, name)}" for name in exposed)
            raise ValueError(
                f"{where} listens beyond loopback without authentication: set APPEVENTS_BRIDGE_TOKEN (or "
                "APPEVENTS_BRIDGE_TOKENS_FILE, or client certificates: APPEVENTS_BRIDGE_TLS_CLIENT_CA_FILE), or accept "
                "anyone who can reach it with "
                "--allow-unauthenticated (APPEVENTS_BRIDGE_ALLOW_UNAUTHENTICATED=true)"
            )
        return self

    @property
    def authenticated(self) -> bool:
        """Whether a client must prove who it is (a token, or a certificate from the client CAs)."""
        return self.token is not None or self.tokens_file is not None or self.tls_client_ca_file is not None

    def exposed_unauthenticated(self) -> list[str]:
        """The listeners (``http``, ``grpc``) beyond loopback that anyone who reaches them may publish to."""
        if self.authenticated:
            return []
        return [name for name in ("http", "grpc") if not _loopback(parse_endpoint(getattr(self, name)))]


def _loopback(address: tuple[str, int] | None) -> bool:
    """True for no listener, and for one that only this host can reach (127.0.0.0/8, ::1, localhost)."""
    if address is None:
        return True
    host = address[0].lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything
