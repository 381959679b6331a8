"""The exporter's view of the Dapr sidecar: a lazily created client and whether the component is registered.

Used from the exporter's thread; only :meth:`Sidecar.close` comes from another (``shutdown()``). ``DaprClient()``
blocks in its constructor polling the sidecar's ``/healthz/outbound`` for up to ``DAPR_HEALTH_TIMEOUT`` (60 s),
printing a line per failed probe; so this module probes once itself, briefly, and creates the client only once the
sidecar answers. A sidecar that is not up yet is a transient condition the exporter retries, never a blocked thread.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
from dapr.clients import DaprClient
from dapr.clients.http.helpers import get_api_url
from dapr.clients.retry import RetryPolicy
from dapr.conf import settings as dapr_settings

from appevents.exporting import LogOnce
from appevents_exporter_dapr._failures import TRANSIENT_CODES, error_code
from appevents_exporter_dapr._settings import DaprExporterSettings

__all__ = ["Sidecar", "SidecarNotReady", "component_hint"]

_logger = logging.getLogger("appevents.dapr")


class SidecarNotReady(Exception):
    """The sidecar cannot be reached yet (a transient condition)."""


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _DeadlineInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Give every unary call a deadline: a hung sidecar must not hang the exporter thread forever."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        if details.timeout is None:
            details = _CallDetails(
                details.method,
                self._timeout_s,
                details.metadata,
                details.credentials,
                details.wait_for_ready,
                details.compression,
            )
        return continuation(details, request)


def component_hint(name: str, kind: str) -> str:
    """How to give the sidecar the ``kind`` component ``name``: a component file to add."""
    spec_type = "pubsub.<type, e.g. pubsub.kafka>" if kind == "pubsub" else "bindings.http"
    extra = "" if kind == "pubsub" else "\n    metadata:\n    - name: url\n      value: https://<events endpoint>"
    return (
        f"add a component file to the sidecar's resources folder (--resources-path), e.g.\n"
        f"  apiVersion: dapr.io/v1alpha1\n  kind: Component\n  metadata:\n    name: {name}\n"
        f"  spec:\n    type: {spec_type}\n    version: v1{extra}"
    )


class Sidecar:
    """A Dapr client created on first use, and a cached answer to "is the component registered?"."""

    def __init__(self, settings: DaprExporterSettings, component: str, kind: str, log_once: LogOnce) -> None:
        self._settings = settings
        self.component = component
        self._kind = kind
        self._log_once = log_once
        self._client: DaprClient | None = None
        self._closed = False
        self._lock = threading.Lock()  # client creation vs. close() from the thread calling shutdown()
        self._registered: bool | None = None  # None: not asked yet
        self._next_probe_at = 0.0
        self._probe_backoff = settings.probe_initial_backoff_s

    # -- client --------------------------------------------------------------------------------------------------
    def client(self) -> DaprClient:
        """The Dapr client; :class:`SidecarNotReady` while the sidecar does not answer its health endpoint, and
        for good once :meth:`close` was called."""
        client = self._client
        if client is not None:
            return client
        if self._closed:
            raise SidecarNotReady("closed")
        self._probe_health()
        client = DaprClient(
            interceptors=[_DeadlineInterceptor(self._settings.call_timeout_s)],
            # Retries are ours (bounded, jittered, per event); the SDK's would sleep and print.
            retry_policy=RetryPolicy(max_attempts=0),
        )
        with self._lock:
            if not self._closed:
                self._client = client
                return client
        client.close()  # closed meanwhile: a new channel would outlive shutdown
        raise SidecarNotReady("closed")

    def _probe_health(self) -> None:
        url = f"{get_api_url()}/healthz/outbound"
        headers = {"User-Agent": "appevents-exporter-dapr"}
        if dapr_settings.DAPR_API_TOKEN:
            headers["dapr-api-token"] = str(dapr_settings.DAPR_API_TOKEN)
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=self._settings.health_probe_timeout_s) as response:
                if 200 <= response.status < 300:
                    return
                status = str(response.status)
        except urllib.error.HTTPError as exc:
            status = str(exc.code)
            exc.close()
        except (OSError, ValueError) as exc:
            status = type(exc).__name__
        self._log_once(
            "sidecar-not-ready",
            logging.WARNING,
            "appevents: the Dapr sidecar at %s is not ready (%s); events wait and are retried "
            "(check DAPR_HTTP_ENDPOINT / DAPR_GRPC_ENDPOINT and that daprd runs next to this app)",
            url,
            status,
        )
        raise SidecarNotReady(url)

    # -- component -----------------------------------------------------------------------------------------------
    def component_registered(self) -> bool:
        """Whether the sidecar lists the component; asked once, then re-asked with backoff while it is missing.

        Raises :class:`SidecarNotReady` when the sidecar cannot answer now.
        """
        if self._registered is True:
            return True
        now = time.monotonic()
        if self._registered is False and now < self._next_probe_at:
            return False
        client = self.client()
        try:
            components = {c.name: c.type for c in client.get_metadata().registered_components}
        except ValueError:  # "Cannot invoke RPC on closed channel!": close() was called meanwhile
            raise SidecarNotReady("closed") from None
        except grpc.RpcError as exc:
            code = error_code(exc)
            if code in TRANSIENT_CODES or code is grpc.StatusCode.CANCELLED:
                raise SidecarNotReady(str(code)) from None
            # A sidecar without the metadata API: assume the component is there; calls will tell otherwise.
            components = {self.component: "unknown"}
        if self.component in components:
            if self._registered is False:
                _logger.info("appevents: Dapr component %r is now registered; delivering", self.component)
            self._registered = True
            self._probe_backoff = self._settings.probe_initial_backoff_s
            self._log_once.reset(f"missing-component:{self.component}")
            return True
        self.mark_missing()
        return False

    def mark_missing(self) -> None:
        """Remember the component as missing (listed nowhere, or a call said so); warn once; re-probe later."""
        self._registered = False
        self._next_probe_at = time.monotonic() + self._probe_backoff
        self._log_once(
            f"missing-component:{self.component}",
            logging.WARNING,
            "appevents: the Dapr sidecar has no %s component named %r; events are skipped and counted "
            "(DaprExporter.stats().skipped_no_component) and the sidecar is asked again with backoff. To "
            "deliver them, %s",
            self._kind,
            self.component,
            component_hint(self.component, self._kind),
        )
        self._probe_backoff = min(self._probe_backoff * 2, self._settings.probe_max_backoff_s)

    def close(self) -> None:
        """Close the client for good (at exporter shutdown; idempotent): calls in flight end with ``CANCELLED``,
        later ones fail at once, and no new client is made. (A sidecar that restarts needs no new client: the gRPC
        channel reconnects by itself, and failed calls meanwhile are transient errors the exporter retries.)"""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]
