"""`appevents doctor` run as a user runs it, against stand-ins on loopback: a sidecar with the ``eventstore``
binding, the OAuth2 token endpoint and a Segment receiver. Healthy, it exits 0; then each part is taken down or
misconfigured in turn and the doctor exits 1 naming it — never printing the client secret, the write key or a
token, never sending an event, and finishing in a few seconds even when nothing answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.dapr_sidecar import DaprSidecar, HttpReceiver, free_port
from support.segment_receiver import SegmentReceiver
from support.token_server import TokenServer

pytestmark = pytest.mark.timeout(90)

#: The promise of the command: with everything unreachable it still answers within 10 s (asserted generously).
UNREACHABLE_BOUND_S = 15.0


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float

    def lines(self, mark: str) -> dict[str, str]:
        """Check name → the rest of its line, for the lines starting with ``mark``."""
        found = {}
        for line in self.stdout.splitlines():
            if line.startswith(f"{mark} "):
                name, _, detail = line[2:].partition(": ")
                found[name] = detail
        return found

    @property
    def failed(self) -> dict[str, str]:
        return self.lines("✘")

    @property
    def passed(self) -> dict[str, str]:
        return self.lines("✔")


@dataclass
class Stack:
    """What an app next to a sidecar, a token endpoint and Segment would have in its environment."""

    sidecar: DaprSidecar
    receiver: HttpReceiver
    tokens: TokenServer
    segment: SegmentReceiver
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)

    def doctor(self, *args: str, unset: tuple[str, ...] = (), **overrides: str) -> Run:
        env = {**self.env, **overrides}
        for name in unset:
            env.pop(name, None)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "appevents", "doctor", *args],
            env=env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=60,
        )
        run = Run(result.returncode, result.stdout, result.stderr, time.monotonic() - started)
        self.assert_no_secret(run)
        return run

    def assert_no_secret(self, run: Run) -> None:
        """Whatever happened, the client secret, the write key and every issued token stay out of the output."""
        output = run.stdout + run.stderr
        for secret in (self.tokens.client_secret, self.segment.write_key, *self.tokens.issued):
            assert secret not in output


def _clean_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APPEVENTS_", "DAPR_", "OTEL_", "EVENT_STORE_NAME"))
    }


@pytest.fixture
def segment() -> Iterator[SegmentReceiver]:
    with SegmentReceiver(write_key=f"wk-secret-{os.urandom(8).hex()}") as receiver:
        yield receiver


@pytest.fixture
def stack(
    sidecar: DaprSidecar,
    receiver: HttpReceiver,
    token_server: TokenServer,
    segment: SegmentReceiver,
    tmp_path: Path,
) -> Stack:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    env = {
        **_clean_environment(),
        **sidecar.env(),
        **token_server.env(),
        "PYTHONIOENCODING": "utf-8",
        "APPEVENTS_EXPORTERS": "local,dapr,segment",
        "APPEVENTS_LOCAL_PATH": str(tmp_path / "log" / "events.db"),
        "APPEVENTS_SEGMENT_WRITE_KEY": segment.write_key,
        "APPEVENTS_SEGMENT_HOST": segment.url,
    }
    return Stack(sidecar, receiver, token_server, segment, tmp_path, env)


@pytest.fixture
def black_holes() -> Iterator[list[str]]:
    """Addresses that accept a connection and never answer: the slowest way to be unreachable."""
    sockets: list[socket.socket] = []

    def hole() -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sockets.append(sock)
        return f"127.0.0.1:{sock.getsockname()[1]}"

    yield [hole() for _ in range(4)]
    for sock in sockets:
        sock.close()


def test_doctor_passes_with_a_healthy_sidecar_token_endpoint_and_segment(stack: Stack) -> None:
    run = stack.doctor()
    assert run.returncode == 0, run.stdout + run.stderr
    assert not run.failed
    passed = run.passed
    for name in (
        "settings",
        "exporter local",
        "local event log",
        "exporter dapr",
        "dapr sidecar",
        "dapr components",
        "dapr binding eventstore",
        "dapr token endpoint",
        "exporter segment",
        "segment write key",
        "segment host",
    ):
        assert name in passed, run.stdout
    assert stack.sidecar.env()["DAPR_HTTP_ENDPOINT"] in passed["dapr sidecar"]
    assert stack.sidecar.env()["DAPR_GRPC_ENDPOINT"] in passed["dapr sidecar"]
    assert "eventstore (bindings.http)" in passed["dapr components"]
    # The token is shown as its length, the secret and the write key as ****.
    assert stack.tokens.issued, "the doctor asked for a token"
    assert f"({len(stack.tokens.issued[-1])} characters)" in passed["dapr token endpoint"]
    assert "client secret ****" in passed["dapr token endpoint"]
    assert passed["segment write key"] == "APPEVENTS_SEGMENT_WRITE_KEY=****"
    assert run.stdout.rstrip().endswith("required checks passed")
    assert run.stderr == ""


def test_doctor_sends_no_event_and_leaves_no_event_log_behind(stack: Stack) -> None:
    run = stack.doctor()
    assert run.returncode == 0, run.stdout
    assert stack.sidecar.binding_calls == [] and stack.receiver.requests == []
    assert stack.segment.messages == [] and all(r.method == "GET" for r in stack.segment.requests)
    assert not (stack.tmp / "log").exists()  # the writability probe removed what it made


def test_doctor_names_a_stopped_sidecar(stack: Stack) -> None:
    stack.sidecar.stop()
    run = stack.doctor()
    assert run.returncode == 1
    assert "dapr sidecar" in run.failed
    assert stack.sidecar.env()["DAPR_HTTP_ENDPOINT"] in run.failed["dapr sidecar"]
    assert stack.sidecar.env()["DAPR_GRPC_ENDPOINT"] in run.failed["dapr sidecar"]
    assert "start daprd" in run.stdout
    assert "segment host" in run.passed and "local event log" in run.passed  # the others are still checked


def test_doctor_prints_the_component_yaml_for_a_missing_binding(stack: Stack) -> None:
    stack.sidecar.unregister("eventstore")
    stack.sidecar.register("statestore", "state.redis")
    run = stack.doctor()
    assert run.returncode == 1
    assert "dapr binding eventstore" in run.failed
    assert "statestore (state.redis)" in run.passed["dapr components"]
    for line in ("kind: Component", "name: eventstore", "type: bindings.http", "- name: url", "value: https://"):
        assert line in run.stdout


def test_doctor_prints_the_pubsub_yaml_in_pubsub_mode(stack: Stack) -> None:
    run = stack.doctor(APPEVENTS_DAPR_MODE="pubsub", APPEVENTS_DAPR_PUBSUB="events")
    assert run.returncode == 1
    assert "dapr pubsub events" in run.failed
    assert "name: events" in run.stdout and "type: pubsub." in run.stdout
    stack.sidecar.register("events", "pubsub.redis")
    run = stack.doctor(APPEVENTS_DAPR_MODE="pubsub", APPEVENTS_DAPR_PUBSUB="events")
    assert run.returncode == 0, run.stdout
    assert "pubsub mode" in run.passed["dapr token endpoint"]  # the bearer token is for bindings only


def test_doctor_names_a_token_endpoint_refusing_the_credentials(stack: Stack) -> None:
    stack.tokens.status = 401
    run = stack.doctor()
    assert run.returncode == 1
    assert "dapr token endpoint" in run.failed
    assert "HTTP 401" in run.failed["dapr token endpoint"]
    assert "client secret ****" in run.failed["dapr token endpoint"]
    assert "dapr binding eventstore" in run.passed


def test_doctor_names_a_token_endpoint_that_is_down(stack: Stack) -> None:
    stack.tokens.close()
    run = stack.doctor()
    assert run.returncode == 1
    assert "unreachable" in run.failed["dapr token endpoint"]
    assert list(run.failed) == ["dapr token endpoint"]


def test_doctor_names_an_unreachable_segment_host(stack: Stack) -> None:
    url = stack.segment.url
    stack.segment.stop()
    run = stack.doctor()
    assert run.returncode == 1
    assert list(run.failed) == ["segment host"]
    assert url in run.failed["segment host"]


def test_doctor_names_a_missing_segment_write_key(stack: Stack) -> None:
    run = stack.doctor(unset=("APPEVENTS_SEGMENT_WRITE_KEY",))
    assert run.returncode == 1
    assert "exporter segment" in run.failed
    assert "APPEVENTS_SEGMENT_WRITE_KEY is not set" in run.failed["exporter segment"]


def test_doctor_names_an_unwritable_local_path(stack: Stack) -> None:
    blocker = stack.tmp / "not-a-directory"
    blocker.write_text("a file where the log's directory should be")
    run = stack.doctor(APPEVENTS_LOCAL_PATH=str(blocker / "events.db"))
    assert run.returncode == 1
    assert list(run.failed) == ["local event log"]
    assert str(blocker / "events.db") in run.failed["local event log"]
    assert "APPEVENTS_LOCAL_PATH" in run.stdout


def test_doctor_names_an_unknown_exporter_and_lists_the_installed_ones(stack: Stack) -> None:
    run = stack.doctor(APPEVENTS_EXPORTERS="local,dapr,segment,kafka")
    assert run.returncode == 1
    assert list(run.failed) == ["exporter kafka"]
    assert "installed: " in run.failed["exporter kafka"]
    for installed in ("dapr", "local", "segment"):
        assert installed in run.failed["exporter kafka"]


def test_doctor_names_an_invalid_exporter_setting_without_its_value(stack: Stack) -> None:
    run = stack.doctor(APPEVENTS_DAPR_MODE="sideways-s3cr3t")
    assert run.returncode == 1
    assert "exporter dapr" in run.failed and "mode" in run.failed["exporter dapr"]
    assert "sideways-s3cr3t" not in run.stdout + run.stderr


def test_doctor_json_lists_every_check(stack: Stack) -> None:
    stack.sidecar.unregister("eventstore")
    run = stack.doctor("--json")
    assert run.returncode == 1
    checks = json.loads(run.stdout)
    assert all(set(check) == {"name", "ok", "detail", "fix", "required"} for check in checks)
    by_name = {check["name"]: check for check in checks}
    assert by_name["dapr binding eventstore"]["ok"] is False
    assert "kind: Component" in by_name["dapr binding eventstore"]["fix"]
    assert by_name["dapr sidecar"]["ok"] is True and by_name["segment host"]["ok"] is True


def test_doctor_bounds_a_sidecar_whose_grpc_port_never_answers(stack: Stack, black_holes: list[str]) -> None:
    run = stack.doctor("--timeout", "1", DAPR_GRPC_ENDPOINT=black_holes[0])
    assert run.returncode == 1
    assert "DEADLINE_EXCEEDED" in run.failed["dapr components"]
    assert "dapr binding eventstore" in run.failed
    assert run.elapsed_s < UNREACHABLE_BOUND_S


def test_doctor_finishes_within_ten_seconds_with_everything_unreachable(
    stack: Stack, black_holes: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    http, grpc_address, token, segment = black_holes
    run = stack.doctor(
        APPEVENTS_EXPORTERS="local,dapr,segment,otlp",
        DAPR_HTTP_ENDPOINT=f"http://{http}",
        DAPR_GRPC_ENDPOINT=grpc_address,
        APPEVENTS_AUTH_TOKEN_URL=f"http://{token}/token",
        APPEVENTS_SEGMENT_HOST=f"http://{segment}",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
    )
    assert run.returncode == 1
    for name in ("dapr sidecar", "dapr token endpoint", "segment host", "otlp endpoint"):
        assert name in run.failed, run.stdout
    assert "local event log" in run.passed
    assert run.elapsed_s < UNREACHABLE_BOUND_S, f"took {run.elapsed_s:.1f} s"
    with capsys.disabled():
        print(f"\n[doctor with everything unreachable: {run.elapsed_s:.2f} s]")


def test_doctor_runs_as_the_appevents_command(stack: Stack) -> None:
    script = Path(sys.executable).with_name("appevents")  # the console script the install put beside python
    assert script.exists(), f"{script} is missing: the appevents entry point was not installed"
    result = subprocess.run(
        [str(script), "doctor"], env=stack.env, cwd=stack.tmp, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✔ dapr binding eventstore" in result.stdout


def test_doctor_leaves_no_thread_of_the_exporters_it_built(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from appevents._doctor import passed, run_checks

    for name in [n for n in os.environ if n.startswith(("APPEVENTS_", "DAPR_", "OTEL_"))]:
        monkeypatch.delenv(name)
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    run_checks(timeout_s=2.0, cwd=stack.tmp)  # the stand-ins in this process start their worker threads
    before = set(threading.enumerate())
    checks = run_checks(timeout_s=2.0, cwd=stack.tmp)
    assert passed(checks), checks
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert left == []
