"""The real ``appevents bridge`` command in a subprocess on free loopback ports, and small OTLP/HTTP clients."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from appevents import Event
from support.dapr_sidecar import HttpReceiver, free_port

TOKEN = "bridge-test-token-3f9a"  # a test value; what matters is that it never shows up in a log


@dataclass
class BridgeProcess:
    """``python -m appevents bridge`` with the given environment; stderr goes to a file the test can read."""

    env: dict[str, str]
    log_path: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    #: Where both listeners bind (clients always connect through loopback).
    host: str = "127.0.0.1"
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 20.0) -> BridgeProcess:
        command = [
            sys.executable,
            "-m",
            "appevents",
            "bridge",
            "--http",
            f"{self.host}:{self.http_port}",
            "--grpc",
            f"{self.host}:{self.grpc_port}",
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the bridge exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the bridge did not answer /healthz within {timeout_s}s: {self.log()}")

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def peak_rss_bytes(self) -> tuple[int, int]:
        """(resident now, peak resident so far) of the bridge process, from /proc (Linux)."""
        assert self.proc is not None
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines() if ":" in line
        )
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -- OTLP payloads -------------------------------------------------------------------------------------------------
def events(count: int, *, tag: str = "t") -> list[Event]:
    return [
        Event(
            event_type="order.received",
            data={"n": i, "tag": tag, "nested": {"list": [1, 2.5, None, "é"]}},
            metadata={"application_name": "bridge-test", "workflow_id": f"wf-{i}", "created_timestamp": 1764633600},
        )
        for i in range(count)
    ]


def request_of(*bodies: str | AnyValue, attributes: dict[str, str] | None = None, event_name: str = "") -> bytes:
    """An ``ExportLogsServiceRequest`` (protobuf) with one record per body."""
    records = []
    for body in bodies:
        value = body if isinstance(body, AnyValue) else AnyValue(string_value=body)
        records.append(
            LogRecord(
                time_unix_nano=time.time_ns(),
                body=value,
                event_name=event_name,
                attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in (attributes or {}).items()],
            )
        )
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])])
    return request.SerializeToString()


@dataclass
class Answer:
    status: int
    body: bytes
    #: Header names are case-insensitive (``headers.get("www-authenticate")`` finds ``WWW-Authenticate``).
    headers: Message


def post(
    url: str,
    body: bytes,
    *,
    token: str | None = TOKEN,
    content_type: str = "application/x-protobuf",
    gzipped: bool = False,
    timeout_s: float = 20.0,
) -> Answer:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    request = urllib.request.Request(f"{url}/v1/logs", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return Answer(answer.status, answer.read(), answer.headers)
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read(), error.headers)


def delivered(receiver: HttpReceiver) -> list[dict[str, Any]]:
    """Every event the receiver took (batch mode: each request body is a JSON array of events)."""
    out: list[dict[str, Any]] = []
    for body in receiver.bodies():
        document = json.loads(body)
        out.extend(document if isinstance(document, list) else [document])
    return out
