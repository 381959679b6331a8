"""Secure by default (real bridge processes): a listener beyond loopback without a token or client certificates
refuses to start (exit 2, naming the setting and the opt-out) unless ``--allow-unauthenticated`` (or its
variable), which then warns at start; the Bearer scheme is matched in any case (RFC 9110); two ``Authorization``
headers (or gRPC ``authorization`` entries) are refused whatever they hold."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from appevents.bridge import BridgeSettings
from support.bridge_process import TOKEN, BridgeProcess, events, request_of
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def _body() -> bytes:
    return request_of(*[e.model_dump_json() for e in events(1, tag="auth")])


def _post(port: int, authorizations: list[str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.putrequest("POST", "/v1/logs")
        body = _body()
        connection.putheader("Content-Type", "application/x-protobuf")
        connection.putheader("Content-Length", str(len(body)))
        for value in authorizations:  # putheader twice sends the header twice
            connection.putheader("Authorization", value)
        connection.endheaders(body)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _grpc(port: int, authorizations: list[str]) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            channel.unary_unary(_EXPORT)(_body(), metadata=[("authorization", v) for v in authorizations], timeout=20)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK


def test_the_bearer_scheme_is_matched_in_any_case_and_two_credentials_are_refused(
    start_bridge: Callable[..., BridgeProcess],
) -> None:
    bridge = start_bridge()
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert _post(bridge.http_port, [f"{scheme} {TOKEN}"]) == 200, scheme
        assert _grpc(bridge.grpc_port, [f"{scheme} {TOKEN}"]) is grpc.StatusCode.OK, scheme
    for values in ([f"Bearer {TOKEN}", "Bearer wrong"], ["Bearer wrong", f"Bearer {TOKEN}"], [f"Bearer {TOKEN}"] * 2):
        assert _post(bridge.http_port, values) == 401, values
        assert _grpc(bridge.grpc_port, values) is grpc.StatusCode.UNAUTHENTICATED, values
    for value in (f"Basic {TOKEN}", TOKEN, f"Bearer{TOKEN}", "Bearer"):
        assert _post(bridge.http_port, [value]) == 401, value


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("APPEVENTS_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-m", "appevents", "bridge", *args],
        env={**base, "APPEVENTS_EXPORTERS": "memory", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--http", "0.0.0.0:0", "--grpc", "off"), "APPEVENTS_BRIDGE_HTTP=0.0.0.0:0"),
        (("--http", "off", "--grpc", "0.0.0.0:0"), "APPEVENTS_BRIDGE_GRPC=0.0.0.0:0"),
        (("--http", "[::]:0", "--grpc", "127.0.0.1:0"), "APPEVENTS_BRIDGE_HTTP=[::]:0"),
        (("--http", "bridge.example:0", "--grpc", "off"), "APPEVENTS_BRIDGE_HTTP=bridge.example:0"),
    ],
)
def test_a_listener_beyond_loopback_without_credentials_refuses_to_start(args: tuple[str, ...], named: str) -> None:
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "--allow-unauthenticated" in result.stderr
    assert "Traceback" not in result.stderr


def test_allowing_unauthenticated_starts_and_warns(start_bridge: Callable[..., BridgeProcess]) -> None:
    bridge = start_bridge("--allow-unauthenticated", host="0.0.0.0", APPEVENTS_BRIDGE_TOKEN="")
    assert _post(bridge.http_port, []) == 200  # anyone may publish: what the operator accepted
    assert wait_until(lambda: "UNAUTHENTICATED" in bridge.log(), 10)
    bridge.terminate()
    by_variable = start_bridge(host="0.0.0.0", APPEVENTS_BRIDGE_TOKEN="", APPEVENTS_BRIDGE_ALLOW_UNAUTHENTICATED="1")
    assert wait_until(lambda: "UNAUTHENTICATED" in by_variable.log(), 10)


def test_with_a_token_a_listener_beyond_loopback_starts_without_the_warning(
    start_bridge: Callable[..., BridgeProcess],
) -> None:
    bridge = start_bridge(host="0.0.0.0")
    assert _post(bridge.http_port, [f"Bearer {TOKEN}"]) == 200
    assert _post(bridge.http_port, []) == 401
    assert wait_until(lambda: "listening for" in bridge.log(), 10)
    assert "UNAUTHENTICATED" not in bridge.log()


def test_client_certificates_count_as_authentication_and_loopback_needs_none(tmp_path: Path) -> None:
    pem = tmp_path / "any.pem"  # the settings do not read the files; the listeners do
    mutual = BridgeSettings(
        http="0.0.0.0:0", grpc="off", tls_cert_file=pem, tls_key_file=pem, tls_client_ca_file=pem, token=None
    )
    assert mutual.exposed_unauthenticated() == []
    for loopback in ("127.0.0.1:0", "127.8.9.10:0", "[::1]:0", "localhost:0"):
        assert BridgeSettings(http=loopback, grpc="off", token=None).exposed_unauthenticated() == []
    with pytest.raises(ValidationError, match=re.escape("APPEVENTS_BRIDGE_HTTP=0.0.0.0:0")):
        BridgeSettings(http="0.0.0.0:0", grpc="off", token=None)
    allowed = BridgeSettings(http="0.0.0.0:0", grpc="off", token=None, allow_unauthenticated=True)
    assert allowed.exposed_unauthenticated() == ["http"]
