"""One policy for every event (real bridge processes): the library's redaction applies to events that come in
through the bridge; numbers JSON consumers cannot read (NaN, Infinity, 1e400, integers beyond 64 bits) and lone
surrogates are refused per event naming the field, as ``Event(...)`` refuses non-finite numbers; with
``APPEVENTS_BRIDGE_TOKENS_FILE`` each token publishes only for its tenants (and applications), other events are
refused one by one (OTLP partial success) and the rest delivered."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from pydantic import ValidationError

from appevents import Event
from support.bridge_process import TOKEN, BridgeProcess, delivered, events, post, request_of
from support.dapr_sidecar import HttpReceiver
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
_ID = "6f1c1c1e-9d5e-4c51-9f0e-0d5c1e1e1e1e"


def _event_text(data_json: str, event_id: str = _ID) -> str:
    return f'{{"event_type":"order.received","event_id":"{event_id}","data":{data_json}}}'


def _partial(body: bytes) -> tuple[int, str]:
    partial = ExportLogsServiceResponse.FromString(body).partial_success
    return partial.rejected_log_records, partial.error_message


def test_credentials_in_event_data_are_redacted_as_at_publish(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver
) -> None:
    bridge = start_bridge()
    [event] = events(1, tag="secrets")
    document = json.loads(event.model_dump_json())
    document["data"] = {
        "password": "hunter2",
        "nested": {"Authorization": "Bearer abc", "items": [{"client_secret": "s3"}]},
        "note": "kept",
    }
    assert post(bridge.http_url, request_of(json.dumps(document))).status == 200
    assert wait_until(lambda: len(delivered(receiver)) == 1, 20)
    [stored] = delivered(receiver)
    assert stored["data"] == {
        "password": "[REDACTED]",
        "nested": {"Authorization": "[REDACTED]", "items": [{"client_secret": "[REDACTED]"}]},
        "note": "kept",
    }
    assert "hunter2" not in json.dumps(stored)


@pytest.mark.parametrize(
    ("data_json", "named"),
    [
        ('{"x":NaN}', "data.x"),
        ('{"x":{"y":[1,Infinity]}}', "data.x.y[1]"),
        ('{"x":-Infinity}', "data.x"),
        ('{"x":1e400}', "data.x"),
        ('{"x":18446744073709551616}', "data.x"),
        ('{"big":' + "9" * 5001 + "}", "cannot be read"),
        ('{"x":"\\ud800"}', "data.x"),
    ],
)
def test_numbers_json_consumers_cannot_read_and_lone_surrogates_are_refused_naming_the_field(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver, data_json: str, named: str
) -> None:
    bridge = start_bridge()
    [valid] = events(1, tag="beside")
    answer = post(bridge.http_url, request_of(_event_text(data_json), valid.model_dump_json()))
    assert answer.status == 200
    rejected, message = _partial(answer.body)
    assert rejected == 1
    assert named in message, message
    assert wait_until(lambda: [e["event_id"] for e in delivered(receiver)] == [valid.event_id], 20)


def test_the_library_refuses_non_finite_numbers_the_same_way() -> None:
    for value in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValidationError, match=re.escape("data.x")):
            Event(event_type="order.received", data={"x": value})


def _tokens_file(tmp_path: Path, entries: list[dict[str, object]]) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}))
    path.chmod(0o600)
    return path


def _tenant_event(tenant: str | None, application: str, tag: str) -> Event:
    return Event(
        event_type="order.received",
        data={"tag": tag},
        metadata={"tenant_id": tenant, "application_name": application},
    )


def test_a_tokens_file_limits_each_token_to_its_tenants_and_applications(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver, tmp_path: Path
) -> None:
    path = _tokens_file(
        tmp_path,
        [
            {"token": "acme-token-1", "tenants": ["acme"]},
            {"token": "globex-token-2", "tenants": ["globex"], "applications": ["billing"]},
        ],
    )
    bridge = start_bridge(APPEVENTS_BRIDGE_TOKENS_FILE=str(path))
    acme = _tenant_event("acme", "shop", "acme")
    globex_billing = _tenant_event("globex", "billing", "globex-billing")
    globex_shop = _tenant_event("globex", "shop", "globex-shop")
    no_tenant = _tenant_event(None, "billing", "none")
    everything = [acme, globex_billing, globex_shop, no_tenant]
    bodies = [e.model_dump_json() for e in everything]

    answer = post(bridge.http_url, request_of(*bodies), token="acme-token-1")
    assert answer.status == 200
    rejected, message = _partial(answer.body)
    assert rejected == 3
    assert "tenant_id 'globex'" in message and "APPEVENTS_BRIDGE_TOKENS_FILE" in message
    answer = post(bridge.http_url, request_of(*bodies), token="globex-token-2")
    assert answer.status == 200, answer.body
    rejected, message = _partial(answer.body)
    assert rejected == 3
    assert "application_name 'shop'" in message
    assert post(bridge.http_url, request_of(*bodies), token="unknown").status == 401
    with grpc.insecure_channel(f"127.0.0.1:{bridge.grpc_port}") as channel:  # the same grant over gRPC
        answer_bytes = channel.unary_unary(_EXPORT)(
            request_of(*bodies), metadata=(("authorization", "Bearer acme-token-1"),), timeout=20
        )
    assert _partial(answer_bytes)[0] == 3
    # APPEVENTS_BRIDGE_TOKEN (set by the fixture) still publishes for anyone
    answer = post(bridge.http_url, request_of(*bodies), token=TOKEN)
    assert _partial(answer.body)[0] == 0

    def ids() -> list[str]:
        return sorted(e["event_id"] for e in delivered(receiver))

    expected = sorted([acme.event_id, acme.event_id, globex_billing.event_id] + [e.event_id for e in everything])
    assert wait_until(lambda: ids() == expected, 20), ids()
    assert "acme-token-1" not in bridge.log() and "globex-token-2" not in bridge.log()


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('{"tokens": [{"token": "tok-9c2e-secret"}]}', "tokens.0.tenants"),
        ('{"tokens": [{"token": "tok-9c2e-secret", "tenants": []}]}', "tokens.0.tenants"),
        (
            json.dumps({"tokens": [{"token": "tok-9c2e-secret", "tenants": [t]} for t in ("a", "b")]}),
            "tokens.1.token",
        ),
        ("not json", "APPEVENTS_BRIDGE_TOKENS_FILE"),
        (None, "cannot read it"),
    ],
)
def test_a_bad_tokens_file_stops_the_bridge_naming_the_problem_not_the_tokens(
    tmp_path: Path, content: str | None, named: str
) -> None:
    path = tmp_path / "tokens.json"
    if content is not None:
        path.write_text(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPEVENTS_", "OTEL_"))}
    env.update({"APPEVENTS_EXPORTERS": "memory", "APPEVENTS_BRIDGE_TOKENS_FILE": str(path)})
    result = subprocess.run(
        [sys.executable, "-m", "appevents", "bridge", "--http", "127.0.0.1:0", "--grpc", "off"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and "APPEVENTS_BRIDGE_TOKENS_FILE" in result.stderr
    assert "tok-9c2e-secret" not in result.stderr
    assert "Traceback" not in result.stderr
