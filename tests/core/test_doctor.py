"""`appevents doctor`, the checks the core makes itself: settings, exporter names, the local log, the spool, OTLP.

Run in-process through the command line's ``main`` (the Dapr and Segment checks, and the command as a separate
process, are in ``tests/dapr/test_doctor.py``).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appevents import AppEventsSettings, Event
from appevents._cli import main
from appevents._memory import InMemoryEventExporter
from appevents._records import encode_event
from appevents._spool import Spool
from appevents._sqlite_log import LocalEventLog
from appevents.bridge import Bridge, BridgeSettings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _no_destinations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "APPEVENTS_SPOOL_PATH",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["doctor", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _checks(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, dict[str, Any]]]:
    code = main(["doctor", "--json"])
    checks = json.loads(capsys.readouterr().out)
    return code, {check["name"]: check for check in checks}


def test_doctor_passes_with_the_default_local_log(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = _doctor(capsys)
    assert code == 0, output
    assert "✔ settings: APPEVENTS_EXPORTERS=local (default)" in output
    assert "✔ exporter local:" in output and "✔ local event log:" in output
    assert "✘" not in output


def test_doctor_names_invalid_settings_without_echoing_their_values(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPEVENTS_SPOOL_SYNC", "hunter2-not-a-mode")
    monkeypatch.setenv("APPEVENTS_MAX_QUEUE_SIZE", "hunter3-not-a-number")
    code, output = _doctor(capsys)
    assert code == 1
    settings_line = next(line for line in output.splitlines() if line.startswith("✘ settings"))
    assert "APPEVENTS_SPOOL_SYNC" in settings_line and "APPEVENTS_MAX_QUEUE_SIZE" in settings_line
    assert "hunter2" not in output and "hunter3" not in output


def test_doctor_names_an_unknown_exporter(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "local,nosuch")
    code, checks = _checks(capsys)
    assert code == 1
    assert checks["exporter nosuch"]["ok"] is False
    assert "installed: " in checks["exporter nosuch"]["detail"] and "local" in checks["exporter nosuch"]["detail"]
    assert "APPEVENTS_EXPORTERS" in checks["exporter nosuch"]["fix"]
    assert checks["local event log"]["ok"] is True


def test_doctor_checks_an_existing_local_log_without_writing_to_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "events.db"
    log = LocalEventLog(path)
    event = Event(event_type="order.received", data={"order_id": "o-1"})
    log.append([(event, event.model_dump_json(), None)])
    log.close()
    monkeypatch.setenv("APPEVENTS_LOCAL_PATH", str(path))
    code, checks = _checks(capsys)
    assert code == 0
    assert "writable (1 event(s) stored" in checks["local event log"]["detail"]
    assert LocalEventLog(path).count() == 1


def test_doctor_probes_a_new_local_log_and_leaves_nothing_behind(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APPEVENTS_LOCAL_PATH", str(tmp_path / "a" / "b" / "events.db"))
    code, checks = _checks(capsys)
    assert code == 0
    assert "does not exist yet" in checks["local event log"]["detail"]
    assert list(tmp_path.iterdir()) == []


def test_doctor_names_an_unwritable_local_log(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("APPEVENTS_LOCAL_PATH", str(tmp_path / "file" / "events.db"))
    code, checks = _checks(capsys)
    assert code == 1
    check = checks["local event log"]
    assert check["ok"] is False and check["required"] is True
    assert str(tmp_path / "file" / "events.db") in check["detail"]
    assert "APPEVENTS_LOCAL_PATH" in check["fix"]


def _spool_with(path: Path, count: int, *, age_s: float, max_bytes: int = 1 << 20) -> int:
    """A spool left by a pipeline that stopped with ``count`` events (the oldest ``age_s`` old); returns bytes."""
    spool = Spool(path, max_bytes=max_bytes, exporters=["local"])
    events = [
        encode_event(Event(event_type="order.received", data={"n": n}), time.time_ns() - int(age_s * 1e9))
        for n in range(count)
    ]
    taken, _ = spool.append(events)
    spool.commit()
    spool.close()
    return sum(len(e.body) for e in events[:taken])


def _owners(path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT * FROM owners ORDER BY owner").fetchall()
    finally:
        db.close()


def test_doctor_reports_the_spool_depth_bytes_and_oldest_age_without_registering(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    size = _spool_with(path, 3, age_s=150)
    owners = _owners(path)
    monkeypatch.setenv("APPEVENTS_SPOOL_PATH", str(path))
    code, checks = _checks(capsys)
    assert code == 0
    detail = checks["spool"]["detail"]
    assert "3 event(s) waiting" in detail
    assert f"{size / 1024:.1f} KiB of 512.0 MiB (APPEVENTS_SPOOL_MAX_BYTES)" in detail
    assert "oldest 2 min" in detail
    assert "1 pipeline(s) registered (1 closed with events left)" in detail
    assert _owners(path) == owners  # no owner row added, none touched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.db"]  # no -wal/-shm left behind


def test_doctor_flags_a_full_spool(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    _spool_with(path, 5, age_s=1, max_bytes=10_000)
    monkeypatch.setenv("APPEVENTS_SPOOL_PATH", str(path))
    monkeypatch.setenv("APPEVENTS_SPOOL_MAX_BYTES", "100")
    code, checks = _checks(capsys)
    assert code == 1
    assert checks["spool"]["detail"].startswith("full: new events are refused")
    assert "APPEVENTS_SPOOL_MAX_BYTES" in checks["spool"]["fix"]


def test_doctor_accepts_a_spool_not_created_yet(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APPEVENTS_SPOOL_PATH", str(tmp_path / "spool" / "spool.db"))
    code, checks = _checks(capsys)
    assert code == 0
    assert "does not exist yet" in checks["spool"]["detail"]
    assert not (tmp_path / "spool").exists()


TOKEN = "otlp-receiver-token-0123456789"


@pytest.fixture
def receiver() -> Iterator[Bridge]:
    """A real OTLP logs receiver on loopback, HTTP and gRPC, that wants a bearer token: ``appevents bridge``."""
    settings = BridgeSettings(http="127.0.0.1:0", grpc="127.0.0.1:0", token=TOKEN)
    bridge = Bridge(settings, AppEventsSettings(exporters=[]), exporters={"memory": InMemoryEventExporter()}).start()
    yield bridge
    bridge.stop(5)


def _otlp(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "otlp")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, checks = _checks(capsys)
    check = checks["otlp endpoint"]
    assert code == (0 if check["ok"] else 1)
    assert TOKEN not in json.dumps(check) and "wrong-token" not in json.dumps(check)
    return check


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_doctor_sends_an_empty_export_to_the_otlp_endpoint_with_the_exporters_headers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, receiver: Bridge, protocol: str
) -> None:
    port = receiver.http_port if protocol == "http/protobuf" else receiver.grpc_port
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    check = _otlp(
        capsys,
        monkeypatch,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_HEADERS=f"Authorization=Bearer%20{TOKEN}",
    )
    assert check["ok"] is True, check
    assert f"127.0.0.1:{port}" in check["detail"] and "took an empty logs export" in check["detail"]

    check = _otlp(capsys, monkeypatch, OTEL_EXPORTER_OTLP_LOGS_HEADERS="Authorization=Bearer wrong-token")
    assert check["ok"] is False
    assert "refused" in check["detail"] and "OTEL_EXPORTER_OTLP_LOGS_HEADERS" in check["fix"]
    assert receiver.stats().refused_requests == {"unauthorized": 1}
    assert receiver.stats().requests == 1  # the empty export, taken: no record in it


def test_doctor_names_a_wrong_path_a_missing_receiver_and_one_that_never_answers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, receiver: Bridge
) -> None:
    base = f"http://user:pw-secret@127.0.0.1:{receiver.http_port}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{TOKEN}")
    check = _otlp(capsys, monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT=base)
    assert check["ok"] is True and "pw-secret" not in check["detail"]
    # The logs endpoint wins over the base endpoint, and is used as it is (no /v1/logs added).
    check = _otlp(capsys, monkeypatch, OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"{base}/v1/traces")
    assert check["ok"] is False and "HTTP 404" in check["detail"]
    assert "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT" in check["fix"] and "pw-secret" not in json.dumps(check)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    check = _otlp(capsys, monkeypatch, OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"http://127.0.0.1:{port}/v1/logs")
    assert check["ok"] is False and "no connection" in check["detail"]
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}/v1/logs")
        started = time.monotonic()
        code = main(["doctor", "--json", "--timeout", "0.5"])
        checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert code == 1 and "no answer within 0.5 s" in checks["otlp endpoint"]["detail"]
    assert time.monotonic() - started < 10


def test_doctor_says_a_dotenv_file_is_not_read_unless_asked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("APPEVENTS_EXPORTERS=local,from-dotenv\n")
    code, checks = _checks(capsys)
    assert code == 0
    assert checks[".env"]["required"] is False and "not read" in checks[".env"]["detail"]
    assert "exporter from-dotenv" not in checks
    # --env-file puts the file's variables into os.environ: have monkeypatch remove APPEVENTS_EXPORTERS afterwards.
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "local")
    monkeypatch.delenv("APPEVENTS_EXPORTERS")
    code = main(["doctor", "--json", "--env-file", str(tmp_path / ".env")])
    checks = {check["name"]: check for check in json.loads(capsys.readouterr().out)}
    assert code == 1
    assert checks["exporter from-dotenv"]["ok"] is False
    assert ".env" not in checks and str(tmp_path / ".env") in checks["settings"]["detail"]


def test_doctor_masks_values_of_secret_variables_wherever_they_appear(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "blocked-path")
    (tmp_path / "blocked-path").write_text("a file")
    monkeypatch.setenv("APPEVENTS_LOCAL_PATH", str(tmp_path / "blocked-path" / "events.db"))
    code, output = _doctor(capsys)
    assert code == 1
    assert "blocked-path" not in output and "****" in output


def test_doctor_runs_as_python_dash_m_appevents(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "appevents", "doctor", "--json"],
        env={"PATH": "/usr/bin:/bin", "APPEVENTS_LOCAL_PATH": str(tmp_path / "events.db")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [check["ok"] for check in json.loads(result.stdout)] == [True, True, True]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_doctor_names_an_otlp_certificate_it_cannot_use(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, protocol: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    check = _otlp(
        capsys,
        monkeypatch,
        OTEL_EXPORTER_OTLP_ENDPOINT="https://localhost:4318",
        OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE=str(tmp_path / "missing.pem"),
    )
    assert check["ok"] is False
    assert "the certificate in OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE cannot be used" in check["detail"]
    assert check["fix"] == "fix OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE"
