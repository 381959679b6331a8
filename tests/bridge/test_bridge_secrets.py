"""No secret in any output: credentials inside URLs (user info, credential-like query values) are masked in
``appevents doctor`` (text and JSON), in the settings' reprs and in every line the bridge logs; an exporter setting
that cannot be parsed stops ``appevents bridge`` with exit 2 naming the field, never a traceback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from appevents._encoded import mask_credentials
from appevents.bridge import _MaskCredentials
from support.bridge_process import TOKEN

pytestmark = pytest.mark.timeout(90)

SECRETS = ("segpw-7f3a", "daprpw-19bc", "grpcpw-55e0", "urlpw-a0c4", "qs-secret-e81d")
LEAKY = {
    "APPEVENTS_EXPORTERS": "dapr,segment",
    "APPEVENTS_SEGMENT_WRITE_KEY": "write-key-2b1e",
    "APPEVENTS_SEGMENT_HOST": "http://user:segpw-7f3a@127.0.0.1:9",
    "DAPR_HTTP_ENDPOINT": "http://user:daprpw-19bc@127.0.0.1:9",
    "DAPR_GRPC_ENDPOINT": "http://user:grpcpw-55e0@127.0.0.1:9",
    "APPEVENTS_AUTH_TOKEN_URL": "https://svc:urlpw-a0c4@127.0.0.1:9/token?client_secret=qs-secret-e81d&x=1",
    "APPEVENTS_AUTH_CLIENT_ID": "client",
    "APPEVENTS_AUTH_CLIENT_SECRET": "client-secret-3c3c",
}


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("APPEVENTS_", "OTEL_", "DAPR_"))}
    return {**base, **LEAKY, **extra}


def _appevents(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appevents", *args],
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("as_json", [False, True])
def test_doctor_masks_credentials_in_urls(as_json: bool) -> None:
    result = _appevents("doctor", "--timeout", "0.5", *(["--json"] if as_json else []))
    output = result.stdout + result.stderr
    assert "127.0.0.1:9" in output  # the URLs are shown, without what they carry
    for secret in (*SECRETS, "client-secret-3c3c", "write-key-2b1e"):
        assert secret not in output, secret


def test_settings_reprs_mask_credentials_in_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from appevents_exporter_dapr._auth import AuthSettings
    from appevents_exporter_segment._settings import SegmentExporterSettings

    for name, value in LEAKY.items():
        monkeypatch.setenv(name, value)
    shown = repr(SegmentExporterSettings()) + repr(AuthSettings())
    assert "http://127.0.0.1:9" in shown and "https://127.0.0.1:9/token" in shown
    for secret in (*SECRETS, "client-secret-3c3c", "write-key-2b1e"):
        assert secret not in shown, secret


def test_mask_credentials_keeps_the_rest_of_the_text() -> None:
    text = "at http://u:p@h:1/x?a=1&client_secret=s&api_key=k, (https://t@h/?token=t) ok"
    assert mask_credentials(text) == (
        "at http://****@h:1/x?a=1&client_secret=****&api_key=****, (https://****@h/?token=****) ok"
    )


def test_the_bridge_log_filter_masks_messages_their_arguments_and_tracebacks() -> None:
    try:
        raise ConnectionError("cannot reach http://user:urlpw-a0c4@sidecar:3500")
    except ConnectionError:
        record = logging.LogRecord(
            "appevents",
            logging.WARNING,
            __file__,
            1,
            "sidecar %s refused: %s",
            ("http://u:daprpw-19bc@h", 1),
            sys.exc_info(),
        )
    assert _MaskCredentials().filter(record)
    formatted = logging.Formatter().format(record)
    assert "sidecar http://****@h refused: 1" in formatted
    assert "http://****@sidecar:3500" in formatted
    assert "daprpw-19bc" not in formatted and "urlpw-a0c4" not in formatted


def test_an_exporter_setting_that_cannot_be_parsed_exits_2_naming_it() -> None:
    result = _appevents(
        "bridge",
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "off",
        APPEVENTS_BRIDGE_TOKEN=TOKEN,
        APPEVENTS_DAPR_METADATA="not json",
    )
    assert result.returncode == 2, result.stderr
    assert "metadata" in result.stderr
    assert "Traceback" not in result.stderr
    for secret in (*SECRETS, TOKEN):
        assert secret not in result.stderr
