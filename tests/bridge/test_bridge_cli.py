"""``appevents bridge`` refuses to start on a wrong setting among right ones, saying which, never echoing a secret."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support.bridge_process import TOKEN

pytestmark = pytest.mark.timeout(60)


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("APPEVENTS_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-m", "appevents", "bridge", *args],
        env={**base, "APPEVENTS_BRIDGE_TOKEN": TOKEN, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("--http", "nonsense"), {}, "http"),
        (("--grpc", "off", "--http", "off"), {}, "both listeners are off"),
        ((), {"APPEVENTS_BRIDGE_MAX_BODY_BYTES": "-1"}, "max_body_bytes"),
        (("--tls-cert", "/nonexistent.pem"), {}, "both a certificate and a key"),
        (
            ("--http", "127.0.0.1:0", "--grpc", "off"),
            {"APPEVENTS_EXPORTERS": "dapr,no_such_exporter"},
            "no_such_exporter",
        ),
        (  # the process's own OTel logs pipeline: nowhere in a bridge, or a loop back into it
            ("--http", "127.0.0.1:0", "--grpc", "off"),
            {"OTEL_LOGS_EXPORTER": "appevents_segment"},
            "cannot deliver to the 'otel' exporter (chosen because OTEL_LOGS_EXPORTER",
        ),
        (("--http", "127.0.0.1:0", "--grpc", "off"), {"APPEVENTS_EXPORTERS": "otel"}, "set APPEVENTS_EXPORTERS"),
    ],
)
def test_a_wrong_setting_stops_the_bridge_with_a_clear_message(
    args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    result = _run(*args, **env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_a_port_in_use_is_reported_not_raised() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("--http", f"127.0.0.1:{port}", "--grpc", "off", APPEVENTS_EXPORTERS="memory")
    assert result.returncode == 2
    assert "Address already in use" in result.stderr
    assert f"cannot listen on 127.0.0.1:{port} (OTLP/HTTP" in result.stderr  # which address, not only errno 98
    assert "Traceback" not in result.stderr
