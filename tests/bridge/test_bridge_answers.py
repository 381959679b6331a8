"""What a client is told depends on what became of its events (in-process bridge, a scripted exporter): delivered →
200; refused for good by an exporter → 200 with partial success naming the reason; a passing failure → 503 with a
retry hint; no room → RESOURCE_EXHAUSTED with ``RetryInfo`` over gRPC, as the OTLP exporters read it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from appevents import AppEventsSettings
from appevents.bridge import Bridge, BridgeSettings
from appevents.exporting import EncodedEvent, ExportOutcome
from support.bridge_process import events, post, request_of
from support.signal_masks import leaves_process_signals_alone
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


class ScriptedExporter:
    """Refuses events whose JSON holds ``"refuse"`` for good, asks to retry those holding ``"later"``, and blocks
    while :attr:`gate` is clear."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        self.gate.wait(30)
        outcome = ExportOutcome()
        for event in batch:
            if b'"refuse"' in event.body:
                outcome.failed.append((event, "too_large"))
            elif b'"later"' in event.body:
                outcome.retry.append(event)
                outcome.retry_reason = "destination unavailable (scripted)"
            else:
                self.delivered.append(event.event_id)
        return outcome

    def shutdown(self) -> None:
        self.gate.set()


@pytest.fixture
def bridge() -> Iterator[tuple[Bridge, ScriptedExporter]]:
    exporter = ScriptedExporter()
    settings = BridgeSettings(http="127.0.0.1:0", grpc="127.0.0.1:0", ack_timeout_s=10)
    app = AppEventsSettings(exporters=[], max_queue_size=100, schedule_delay_ms=10)
    running = Bridge(settings, app, exporters={"scripted": exporter}).start()
    yield running, exporter
    exporter.gate.set()
    running.stop(5)


def _bodies(tag: str, count: int = 3) -> list[str]:
    return [e.model_dump_json() for e in events(count, tag=tag)]


def test_events_refused_for_good_by_an_exporter_are_a_partial_success(
    bridge: tuple[Bridge, ScriptedExporter],
) -> None:
    running, exporter = bridge
    good = _bodies("fine")
    answer = post(f"http://127.0.0.1:{running.http_port}", request_of(*good, *_bodies("refuse", 2)), token=None)
    assert answer.status == 200
    partial = ExportLogsServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_log_records == 2
    assert "2 too_large" in partial.error_message
    assert exporter.delivered == [json.loads(b)["event_id"] for b in good]
    stats = running.stats()
    assert (stats.acknowledged, stats.rejected) == (3, {"exporter:too_large": 2})


def test_a_passing_failure_is_answered_503_with_a_retry_hint(bridge: tuple[Bridge, ScriptedExporter]) -> None:
    running, _ = bridge
    answer = post(f"http://127.0.0.1:{running.http_port}", request_of(*_bodies("later", 2)), token=None)
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "1"
    assert "unavailable" in Status.FromString(answer.body).message


def test_no_room_over_grpc_is_resource_exhausted_with_retry_info(bridge: tuple[Bridge, ScriptedExporter]) -> None:
    running, exporter = bridge
    exporter.gate.clear()  # the exporter hangs on its first batch (90 events); the next 60 wait in the queue
    url = f"http://127.0.0.1:{running.http_port}"
    statuses: list[int] = []

    def send(tag: str, count: int) -> None:
        statuses.append(post(url, request_of(*_bodies(tag, count)), token=None).status)

    waiting = [threading.Thread(target=send, args=args) for args in (("first", 90), ("second", 60))]
    try:
        assert running.pipeline is not None
        pipeline = running.pipeline
        for thread in waiting:
            before = pipeline.stats()["scripted"].accepted
            thread.start()
            wait_until(lambda before=before: pipeline.stats()["scripted"].accepted >= before + 1, timeout_s=10)
        wait_until(lambda: pipeline.stats()["scripted"].accepted == 150, timeout_s=10)
        room = pipeline.room()
        assert room < 100  # the second request waits in the queue behind the hanging first batch
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            call = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            with pytest.raises(grpc.RpcError) as refused:
                call(request_of(*_bodies("third", room + 1)), timeout=10)
    finally:
        exporter.gate.set()
        for thread in waiting:
            thread.join(20)
    assert statuses == [200, 200]
    assert len(exporter.delivered) == 150  # the two admitted requests lost nothing
    error = refused.value
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
    status = Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.details[0].Is(RetryInfo.DESCRIPTOR)


def test_the_bridge_threads_leave_the_process_signals_to_the_application(
    bridge: tuple[Bridge, ScriptedExporter],
) -> None:
    """SIGTERM must reach the thread whose handler stops the bridge, not a listener's or a worker's."""
    running, _ = bridge
    before = set(threading.enumerate())
    assert post(f"http://127.0.0.1:{running.http_port}", request_of(*_bodies("http")), token=None).status == 200
    with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")(
            request_of(*_bodies("grpc")), timeout=10
        )
    started = {thread for thread in threading.enumerate() if thread.name.startswith("appevents-")} - before
    names = sorted(thread.name for thread in started)
    assert any(name.startswith("appevents-bridge-http-worker") for name in names), names
    assert any(name.startswith("appevents-bridge-grpc") for name in names), names
    serving = [thread for thread in threading.enumerate() if thread.name.startswith("appevents-")]
    assert [thread.name for thread in serving if not leaves_process_signals_alone(thread)] == []
