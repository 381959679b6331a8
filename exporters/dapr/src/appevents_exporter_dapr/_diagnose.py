"""What ``appevents doctor`` checks for the Dapr exporter (:meth:`DaprExporter.diagnose`), each step bounded.

* ``dapr sidecar`` — the health endpoint the SDK polls (``/v1.0/healthz/outbound``) answers, within ``timeout_s``;
  probed here directly, never through ``DaprClient()``, whose constructor polls it for ``DAPR_HEALTH_TIMEOUT``;
* ``dapr components`` — ``GetMetadata`` on the gRPC endpoint (a plain stub, deadline ``timeout_s``);
* ``dapr binding <name>`` (``dapr pubsub <name>`` in pubsub mode) — the component is registered with the right
  kind; when it is not, the fix is the component file to add;
* ``dapr token endpoint`` — when ``APPEVENTS_AUTH_*`` configure OAuth2 (binding modes): a token is issued, within
  ``timeout_s``. The client secret is shown as ``****``, the token as its length. Runs beside the sidecar checks,
  so the whole takes at most two bounded steps.

Nothing is sent to the binding or the pub/sub.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Any

import grpc
from dapr.clients.http.helpers import get_api_url
from dapr.conf import settings as dapr_settings
from dapr.conf.helpers import GrpcEndpoint
from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2

from appevents.exporting import Check, safe_url
from appevents_exporter_dapr._auth import AuthError, AuthSettings, ClientCredentialsTokenProvider
from appevents_exporter_dapr._sidecar import component_hint

__all__ = ["diagnose_dapr"]

MASK = "****"
_START_SIDECAR = (
    "start daprd next to the app (e.g. `dapr run --app-id <app> --resources-path ./components -- <command>`), or "
    "point DAPR_HTTP_ENDPOINT / DAPR_GRPC_ENDPOINT at where it listens"
)


def diagnose_dapr(
    *,
    component: str,
    kind: str,
    auth: AuthSettings | None,
    custom_auth: bool,
    timeout_s: float,
) -> list[Check]:
    """The Dapr exporter's checks. ``kind``: ``binding`` or ``pubsub``; ``auth``: the OAuth2 settings the exporter
    was built from (None: a provider given in code, ``custom_auth``, or none)."""
    token: list[Check] = []
    worker: threading.Thread | None = None
    if kind == "binding" and auth is not None and auth.enabled:
        worker = threading.Thread(
            target=lambda: token.append(_check_token(auth, timeout_s)), name="appevents-doctor-token", daemon=True
        )
        worker.start()
    checks = _sidecar_checks(component, kind, timeout_s)
    if worker is not None:
        worker.join(timeout_s + 1.0)
        checks += token or [
            Check("dapr token endpoint", False, f"no answer within {timeout_s:g} s", "check APPEVENTS_AUTH_TOKEN_URL")
        ]
    elif kind != "binding":
        checks.append(Check("dapr token endpoint", True, "not used in pubsub mode", required=False))
    elif custom_auth:
        checks.append(Check("dapr token endpoint", True, "headers come from a provider given in code (not checked)"))
    else:
        checks.append(
            Check(
                "dapr token endpoint",
                True,
                "OAuth2 not configured (APPEVENTS_AUTH_* unset): binding calls carry no Authorization header",
                required=False,
            )
        )
    return checks


# -- sidecar ---------------------------------------------------------------------------------------------------
def _sidecar_checks(component: str, kind: str, timeout_s: float) -> list[Check]:
    component_check = f"dapr {kind} {component}"
    try:
        where = _addresses()
        health_url = f"{get_api_url()}/healthz/outbound"
        grpc_address = dapr_settings.DAPR_GRPC_ENDPOINT or (
            f"{dapr_settings.DAPR_RUNTIME_HOST}:{dapr_settings.DAPR_GRPC_PORT}"
        )
    except ValueError as exc:  # DAPR_HTTP_PORT=abc and the like
        fix = "fix the DAPR_* variable named"
        return [
            Check("dapr sidecar", False, str(exc), fix),
            Check("dapr components", False, "not checked", fix),
            Check(component_check, False, "not checked", fix),
        ]
    health = _check_health(health_url, where, timeout_s)
    if not health.ok:
        skipped = "not checked: the sidecar is not reachable"
        return [
            health,
            Check("dapr components", False, skipped, _START_SIDECAR),
            Check(component_check, False, skipped, _START_SIDECAR),
        ]
    listed, components = _list_components(grpc_address, timeout_s)
    if components is None:
        unknown = listed.ok  # a sidecar without the metadata API: nothing to compare with
        return [
            health,
            listed,
            Check(
                component_check,
                unknown,
                "not checked: the sidecar did not list its components",
                listed.fix,
                required=not unknown,
            ),
        ]
    return [health, listed, _check_component(component, kind, components)]


def _addresses() -> str:
    http = dapr_settings.DAPR_HTTP_ENDPOINT
    grpc_endpoint = dapr_settings.DAPR_GRPC_ENDPOINT
    host = dapr_settings.DAPR_RUNTIME_HOST
    if http:
        http_part = f"DAPR_HTTP_ENDPOINT={safe_url(http)}"
    else:
        http_part = f"DAPR_HTTP_ENDPOINT unset: {host}:{dapr_settings.DAPR_HTTP_PORT} (DAPR_RUNTIME_HOST, _HTTP_PORT)"
    if grpc_endpoint:
        grpc_part = f"DAPR_GRPC_ENDPOINT={safe_url(grpc_endpoint)}"
    else:
        grpc_part = f"DAPR_GRPC_ENDPOINT unset: {host}:{dapr_settings.DAPR_GRPC_PORT} (DAPR_RUNTIME_HOST, _GRPC_PORT)"
    return f"{http_part}, {grpc_part}"


def _api_token_headers() -> dict[str, str]:
    token = dapr_settings.DAPR_API_TOKEN
    return {"dapr-api-token": str(token)} if token else {}


def _check_health(url: str, where: str, timeout_s: float) -> Check:
    shown = safe_url(url)
    request = urllib.request.Request(url, headers={"User-Agent": "appevents-doctor", **_api_token_headers()})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Check(
            "dapr sidecar",
            False,
            f"{shown} unreachable ({type(reason).__name__}, within {timeout_s:g} s); {where}",
            _START_SIDECAR,
        )
    took = (time.monotonic() - started) * 1000
    if 200 <= status < 300:
        return Check("dapr sidecar", True, f"{shown} answered {status} in {took:.0f} ms; {where}")
    fix = (
        "set DAPR_API_TOKEN to the sidecar's API token"
        if status == 401
        else "see the sidecar's log: its outbound components are not ready"
    )
    return Check("dapr sidecar", False, f"{shown} answered HTTP {status}: not ready; {where}", fix)


def _list_components(address: str, timeout_s: float) -> tuple[Check, dict[str, str] | None]:
    name = "dapr components"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # http(s):// gRPC addresses are deprecated
            endpoint = GrpcEndpoint(address)
    except ValueError as exc:
        return Check(name, False, f"invalid gRPC address {address!r}: {exc}", "fix DAPR_GRPC_ENDPOINT"), None
    channel: Any = (
        grpc.secure_channel(endpoint.endpoint, grpc.ssl_channel_credentials())
        if endpoint.tls
        else grpc.insecure_channel(endpoint.endpoint)
    )
    try:
        stub = dapr_pb2_grpc.DaprStub(channel)  # type: ignore[no-untyped-call]
        response = stub.GetMetadata(
            metadata_pb2.GetMetadataRequest(), timeout=timeout_s, metadata=list(_api_token_headers().items())
        )
    except grpc.RpcError as exc:
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        details = exc.details() if callable(getattr(exc, "details", None)) else ""
        code_name = code.name if code is not None else type(exc).__name__
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return Check(
                name, True, f"the sidecar at {address} has no metadata API (components not listed)", required=False
            ), None
        if code is grpc.StatusCode.UNAUTHENTICATED:
            fix = "set DAPR_API_TOKEN to the sidecar's API token"
        else:
            fix = f"check that daprd's gRPC port is at {address} (DAPR_GRPC_ENDPOINT / DAPR_GRPC_PORT)"
        text = " ".join(str(details or "").split())[:200]
        return Check(name, False, f"GetMetadata at {address} failed: {code_name} {text}".rstrip(), fix), None
    finally:
        channel.close()
    components = {c.name: c.type for c in response.registered_components}
    listing = ", ".join(f"{n} ({t})" for n, t in sorted(components.items())) or "none"
    return Check(name, True, f"GetMetadata at {address}: {listing}"), components


def _check_component(component: str, kind: str, components: dict[str, str]) -> Check:
    name = f"dapr {kind} {component}"
    prefix = "pubsub." if kind == "pubsub" else "bindings."
    found = components.get(component)
    if found is not None and found.startswith(prefix):
        return Check(name, True, f"registered ({found})")
    if found is not None:
        return Check(
            name,
            False,
            f"{component!r} is a {found} component, not a {kind}",
            f"name the {kind} differently, or {component_hint(component, kind)}",
        )
    setting = "APPEVENTS_DAPR_PUBSUB" if kind == "pubsub" else "APPEVENTS_DAPR_BINDING / EVENT_STORE_NAME"
    return Check(
        name,
        False,
        f"the sidecar has no {kind} component named {component!r} ({setting})",
        component_hint(component, kind),
    )


# -- token -----------------------------------------------------------------------------------------------------
def _check_token(auth: AuthSettings, timeout_s: float) -> Check:
    name = "dapr token endpoint"
    bounded = auth.model_copy(update={"request_timeout_s": timeout_s, "failure_cooldown_s": 0.0})
    url = safe_url(auth.token_url or "")
    who = f"client_id {auth.client_id!r}, client secret {MASK}"
    started = time.monotonic()
    try:
        token = ClientCredentialsTokenProvider(bounded).token()
    except AuthError as exc:  # its message names the endpoint and status, never the secret
        # What happened, without the exporter's advice ("will retry", its own timeout setting): the fix below is ours.
        message = exc.problem
        if exc.transient:
            fix = "check that the token endpoint is up at APPEVENTS_AUTH_TOKEN_URL and reachable from here"
            message += f" (within {timeout_s:g} s)"
        else:
            fix = "fix the client credentials, or have the identity provider enable this client for the scope"
        return Check(name, False, f"{message}; client secret {MASK}", fix)
    took = (time.monotonic() - started) * 1000
    return Check(name, True, f"{url} issued a token ({len(token)} characters) in {took:.0f} ms ({who})")
