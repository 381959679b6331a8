"""Dapr delivery: delivered throughput of the engine (``batch`` mode) against the OpenTelemetry SDK's batch log
path, and the caller's cost per publish in every mode against a blocking call per event (the application-sdk
``EventStore``'s way) — all in one run.

    .venv/bin/python bench/dapr_throughput.py [--events 30000] [--rounds 5] [--caller-events 20000]
        [--blocking-events 5000]

1. Delivered throughput (issue 8), ``--rounds`` rounds interleaved; events/s of each variant (median, best):

   - ``appevents batch``: ``EventStore.publish(Event(...))`` — construction and validation included — to the Dapr
     sidecar stand-in (``tests/support/dapr_sidecar.py --counting``, another process) with
     ``APPEVENTS_DAPR_MODE=batch``, timed from the first publish until ``EventStore.flush_sync`` returns;
   - ``OTel SDK -> OTLP/HTTP`` (a): ``LoggerProvider`` + ``BatchLogRecordProcessor`` + ``OTLPLogExporter`` to a
     loopback OTLP/HTTP receiver (a minimal ``http.server`` in another process answering 200 to
     ``POST /v1/logs``), ``Logger.emit`` of the same payload — the enriched event JSON as body, ``event_name`` the
     event type, the same attributes, severity INFO — timed until ``LoggerProvider.force_flush`` returns;
   - ``OTel SDK -> no-op`` (b): the same SDK path into a ``LogRecordExporter`` that does nothing.

   The OTel payloads (body strings, attribute dicts) are built before the clock starts: the baselines pay nothing
   for making their JSON, appevents pays for ``Event(...)`` and its serialisation (the cost of building the
   payloads is printed for reference). Both queues hold a whole round (nothing may be dropped; dropped counts are
   checked and printed); the processor exports batches of 512, as the engine does.
   Goals: appevents >= 1.5x (a) and >= 1.0x (b).

2. Caller's cost, per mode (``binding``, ``batch``, ``pubsub``) against the application-sdk ``EventStore``'s
   way — enrich, serialise and a blocking ``DaprClient.invoke_binding`` per event on the caller's path: µs per
   event in the publishing loop, the median single call, and delivered events/s, for events built before timing.
   Then each exporter alone (ready-made encoded events in batches of 512, nobody publishing meanwhile).

At the end: ``EventStore.stats()`` of the throughput pipeline (``accepted = delivered + failed + dropped +
pending``) and the sidecar's counters.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIDECAR_SCRIPT = ROOT / "tests" / "support" / "dapr_sidecar.py"

from opentelemetry._logs import SeverityNumber  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord  # noqa: E402
from opentelemetry.sdk._logs.export import (  # noqa: E402
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)

from appevents import AppEventsSettings, Event, EventStore, configure  # noqa: E402
from appevents.exporting import (  # noqa: E402
    EncodedEvent,
    ExportOutcome,
    record_attributes,
)
from appevents_exporter_dapr import DaprExporter, DaprExporterSettings, DaprMode  # noqa: E402

EVENT_TYPE = "data.batch_processed"
OTEL_BATCH = 512


def sample_event(n: int) -> Event:
    # About the size the design notes measured with (324 bytes of JSON before enrichment).
    return Event(
        event_type=EVENT_TYPE,
        data={"batch_id": f"batch-{n}", "records_processed": 10000, "success_count": 9995, "error_count": 5},
    )


# -- the processes on the other end ------------------------------------------------------------------------------
class Child:
    """A server in a child process (so it does not share our GIL) that prints ``READY <port> ...`` when up."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.ready = self.proc.stdout.readline().split()
        if not self.ready or self.ready[0] != "READY":
            self.close()
            raise RuntimeError(f"{argv[1]} did not start: {self.ready!r}")

    def get_json(self, port: int, path: str) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            answer: dict[str, int] = json.loads(response.read())
            return answer

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class SidecarProcess(Child):
    """The Dapr sidecar stand-in, asyncio gRPC server that only counts."""

    def __init__(self) -> None:
        super().__init__(
            [
                sys.executable,
                str(SIDECAR_SCRIPT),
                "--component",
                "eventstore=bindings.noop",
                "--component",
                "events=pubsub.noop",
                "--counting",
            ]
        )
        self.grpc_port, self.http_port = int(self.ready[1]), int(self.ready[2])

    def env(self) -> dict[str, str]:
        return {
            "DAPR_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            "DAPR_HTTP_ENDPOINT": f"http://127.0.0.1:{self.http_port}",
        }

    def counters(self) -> dict[str, int]:
        return self.get_json(self.http_port, "/stats")


class OtlpReceiverProcess(Child):
    """This script run with ``--serve-otlp``: answers 200 to ``POST /v1/logs``, counts the records it got."""

    def __init__(self) -> None:
        super().__init__([sys.executable, __file__, "--serve-otlp"])
        self.port = int(self.ready[1])
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/logs"

    def counters(self) -> dict[str, int]:
        return self.get_json(self.port, "/stats")


def serve_otlp() -> None:
    """The OTLP/HTTP receiver (child process): keep-alive HTTP/1.1, Nagle off, an empty 200 answer per request."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    counters = {"requests": 0, "records": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else small answers wait ~40 ms for delayed ACKs

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/logs":
                self._reply(404, b"", "text/plain")
                return
            request = ExportLogsServiceRequest.FromString(body)
            counters["requests"] += 1
            counters["records"] += sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
            self._reply(200, b"", "application/x-protobuf")  # an empty ExportLogsServiceResponse

        def do_GET(self) -> None:
            self._reply(200, json.dumps(counters).encode(), "application/json")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


# -- 1. delivered throughput -------------------------------------------------------------------------------------
class CountingExporter(LogRecordExporter):
    """Wraps the baseline's exporter (or is the no-op one): counts what the batch processor handed over and what
    was exported successfully, so records its queue dropped show up as ``emitted - handed``."""

    def __init__(self, inner: LogRecordExporter | None = None) -> None:
        self.inner = inner
        self.handed = 0
        self.exported = 0

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.handed += len(batch)
        result = LogRecordExportResult.SUCCESS if self.inner is None else self.inner.export(batch)
        if result is LogRecordExportResult.SUCCESS:
            self.exported += len(batch)
        return result

    def shutdown(self) -> None:
        if self.inner is not None:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class Throughput:
    name: str
    rates: list[float]
    emitted: int = 0
    delivered: int = 0
    dropped: int = 0

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


class OtelVariant:
    """LoggerProvider + BatchLogRecordProcessor(exporter), queue large enough for a whole round, batches of 512."""

    def __init__(self, name: str, exporter: LogRecordExporter | None, count: int) -> None:
        self.exporter = CountingExporter(exporter)
        self.provider = LoggerProvider(shutdown_on_exit=False)
        self.provider.add_log_record_processor(
            BatchLogRecordProcessor(self.exporter, max_export_batch_size=OTEL_BATCH, max_queue_size=2 * count)
        )
        self.logger = self.provider.get_logger("bench")
        self.result = Throughput(name, [])

    def round(self, payloads: list[tuple[str, dict[str, str]]]) -> None:
        emit = self.logger.emit
        info = SeverityNumber.INFO
        before = self.exporter.exported
        gc.collect()
        start = time.perf_counter()
        for body, attributes in payloads:
            emit(body=body, event_name=EVENT_TYPE, attributes=attributes, severity_number=info, severity_text="INFO")
        self.provider.force_flush()
        elapsed = time.perf_counter() - start
        self.result.emitted += len(payloads)
        self.result.rates.append((self.exporter.exported - before) / elapsed)

    def close(self) -> Throughput:
        self.provider.shutdown()
        self.result.delivered = self.exporter.exported
        self.result.dropped = self.result.emitted - self.exporter.handed
        return self.result


def build_payloads(count: int) -> tuple[list[tuple[str, dict[str, str]]], float]:
    """The OTel baselines' records: what appevents puts in its own (enriched event JSON, attributes); and the µs
    per event that building them took (not part of the baselines' timing)."""
    start = time.perf_counter()
    payloads = []
    for n in range(count):
        event = EventStore.enrich_event_metadata(sample_event(n))
        payloads.append((event.model_dump_json(), record_attributes(event)))
    return payloads, (time.perf_counter() - start) / count * 1e6


def appevents_round(count: int, result: Throughput, start_n: int) -> None:
    stats = EventStore.stats()["dapr"]
    publish = EventStore.publish
    gc.collect()
    start = time.perf_counter()
    for n in range(start_n, start_n + count):
        publish(
            Event(
                event_type=EVENT_TYPE,
                data={"batch_id": f"batch-{n}", "records_processed": 10000, "success_count": 9995, "error_count": 5},
            )
        )
    drained = EventStore.flush_sync(timeout_s=600)
    elapsed = time.perf_counter() - start
    after = EventStore.stats()["dapr"]
    delivered = after.delivered - stats.delivered
    if not drained or delivered != count:
        print(f"  !! appevents batch: drained={drained} delivered={delivered}/{count} stats={after}")
    result.emitted += count
    result.rates.append(delivered / elapsed)


def throughput(count: int, rounds: int, otlp: OtlpReceiverProcess) -> tuple[list[Throughput], dict[str, Any], float]:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    configure(AppEventsSettings(exporters=[]))  # enrichment settings for the baselines' payloads
    payloads, prep_us = build_payloads(count)
    os.environ["APPEVENTS_DAPR_MODE"] = "batch"
    # Queue as large as the baselines' (a whole round): the figure is throughput, nothing may be dropped.
    configure(AppEventsSettings(exporters=["dapr"], max_queue_size=2 * count))
    EventStore.publish(sample_event(-1))  # warm up: creates the Dapr client, probes the component
    EventStore.flush_sync(30)
    mine = Throughput("appevents batch -> Dapr stand-in", [])
    otlp_variant = OtelVariant(
        "OTel SDK -> OTLP/HTTP (a)",
        OTLPLogExporter(endpoint=otlp.endpoint, compression=Compression.NoCompression),
        count,
    )
    noop_variant = OtelVariant("OTel SDK -> no-op exporter (b)", None, count)
    for variant in (otlp_variant, noop_variant):  # warm up: connection, code paths
        variant.round(payloads[:OTEL_BATCH])
        variant.result = Throughput(variant.result.name, [])
        variant.exporter.handed = variant.exporter.exported = 0
    otlp_warm_up = otlp.counters()["records"]
    for r in range(rounds):  # interleaved, so every variant sees the same machine
        appevents_round(count, mine, r * count)
        otlp_variant.round(payloads)
        noop_variant.round(payloads)
    stats = EventStore.stats()
    s = stats["dapr"]
    mine.delivered, mine.dropped = s.delivered - 1, s.dropped  # minus the warm-up event
    results = [mine, otlp_variant.close(), noop_variant.close()]
    EventStore.shutdown()
    received = otlp.counters()["records"] - otlp_warm_up
    if received != results[1].delivered:
        print(f"  !! OTLP receiver got {received} records, the exporter reported {results[1].delivered} exported")
    return results, stats, prep_us


# -- 2. the caller's cost per mode -------------------------------------------------------------------------------
@dataclass
class CallerCost:
    name: str
    events: int
    #: Wall time of the publishing loop per event: includes the GIL time background threads take meanwhile.
    caller_us: float
    #: Median of individually timed calls: what one publish costs the calling code.
    call_median_us: float
    delivered: int
    events_per_s: float


def timed_calls(calls: list[Callable[[], object]]) -> tuple[float, float]:
    """Run the calls; (total seconds, median µs per call)."""
    clock = time.perf_counter_ns
    durations = []
    start = time.perf_counter()
    for call in calls:
        began = clock()
        call()
        durations.append(clock() - began)
    total = time.perf_counter() - start
    durations.sort()
    return total, durations[len(durations) // 2] / 1000


def blocking_per_event_call(count: int) -> CallerCost:
    """What the application-sdk ``EventStore`` does per event: enrich, serialise, then a blocking invoke_binding
    on the caller's path."""
    from dapr.clients import DaprClient

    configure(AppEventsSettings(exporters=[]))  # enrichment settings
    events = [sample_event(n) for n in range(count)]
    metadata = {"Content-Type": "application/json"}
    with DaprClient() as client:
        client.invoke_binding("eventstore", "create", sample_event(-1).model_dump_json(), metadata)  # warm up

        def blocking_publish(event: Event) -> None:
            EventStore.enrich_event_metadata(event)
            client.invoke_binding("eventstore", "create", event.model_dump_json(), metadata)

        elapsed, median = timed_calls([partial(blocking_publish, event) for event in events])
    EventStore.shutdown()
    return CallerCost("blocking per-event call", count, elapsed / count * 1e6, median, count, count / elapsed)


def appevents_mode(mode: str, count: int) -> CallerCost:
    os.environ["APPEVENTS_DAPR_MODE"] = mode
    # The queue must hold a whole burst of `count` events while the slower modes drain it.
    pipeline = configure(AppEventsSettings(exporters=["dapr"], max_queue_size=max(20_000, 2 * count)))
    assert isinstance(pipeline.exporter("dapr"), DaprExporter)
    EventStore.publish(sample_event(-1))  # warm up: creates the Dapr client, probes the component
    EventStore.flush_sync(30)
    before = EventStore.stats()["dapr"].delivered
    events = [sample_event(n) for n in range(count)]
    gc.collect()
    start = time.perf_counter()
    caller, median = timed_calls([partial(EventStore.publish, event) for event in events])
    drained = EventStore.flush_sync(timeout_s=600)
    elapsed = time.perf_counter() - start
    stats = EventStore.stats()["dapr"]
    EventStore.shutdown()
    delivered = stats.delivered - before
    if not drained or delivered != count or stats.failed:
        print(f"  !! {mode}: drained={drained} delivered={delivered}/{count} stats={stats}")
    return CallerCost(f"appevents {mode}", count, caller / count * 1e6, median, delivered, delivered / elapsed)


class _Capture:
    """An encoded-path exporter that keeps what it gets, to feed an exporter directly."""

    def __init__(self) -> None:
        self.events: list[EncodedEvent] = []

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        self.events.extend(batch)
        return ExportOutcome()

    def shutdown(self) -> None:
        pass


def exporter_alone(mode: str, count: int) -> float:
    """Events/s one exporter delivers from ready-made encoded events, batches of 512, nobody publishing meanwhile."""
    capture = _Capture()
    configure(AppEventsSettings(exporters=[], max_queue_size=2 * count), exporters={"capture": capture})
    for n in range(count):
        EventStore.publish(sample_event(n))
    EventStore.shutdown()
    events = capture.events
    exporter = DaprExporter(DaprExporterSettings(mode=DaprMode(mode), pubsub="events"), header_provider=None)
    exporter.export_events(events[:1])
    start = time.perf_counter()
    for at in range(0, count, 512):
        exporter.export_events(events[at : at + 512])
    elapsed = time.perf_counter() - start
    delivered = exporter.stats().delivered - 1
    exporter.shutdown()
    return delivered / elapsed


# -- report ------------------------------------------------------------------------------------------------------
def print_throughput(results: list[Throughput], count: int, rounds: int, prep_us: float) -> None:
    mine, otlp, noop = results
    print(f"\n1. delivered throughput, {count:,} events a round, {rounds} rounds interleaved")
    print(
        f"{'variant':<36} {'median/s':>10} {'best/s':>10} {'worst/s':>10} {'emitted':>9} {'delivered':>10} "
        f"{'dropped':>8}"
    )
    for r in results:
        print(
            f"{r.name:<36} {r.rate:>10,.0f} {max(r.rates):>10,.0f} {min(r.rates):>10,.0f} {r.emitted:>9} "
            f"{r.delivered:>10} {r.dropped:>8}"
        )
    print("(appevents times Event(...) + publish + flush_sync; the baselines' payloads were built beforehand,")
    print(f" {prep_us:.1f} µs/event for Event(...) + enrich + model_dump_json + attributes, not in their time)")
    print("ratios, of the medians and of the best rounds (other load on the machine only ever slows a round down):")
    for baseline, label, goal in ((otlp, "OTel OTLP/HTTP (a)", 1.5), (noop, "OTel no-op     (b)", 1.0)):
        print(
            f"  appevents / {label}:  {mine.rate / baseline.rate:5.2f}x median, "
            f"{max(mine.rates) / max(baseline.rates):5.2f}x best  (goal >= {goal}x)"
        )


def print_caller(results: list[CallerCost], alone: dict[str, float], count: int) -> None:
    baseline = results[0]
    print(f"\n2. caller's cost, {count} pre-built events per appevents mode ({baseline.events} blocking calls)")
    print(
        f"{'variant':<30} {'loop µs/ev':>11} {'loop x':>7} {'call median µs':>15} {'median x':>9} "
        f"{'delivered/s':>12} {'throughput x':>13}"
    )
    for r in results:
        print(
            f"{r.name:<30} {r.caller_us:>11.1f} {baseline.caller_us / r.caller_us:>6.1f}x "
            f"{r.call_median_us:>15.1f} {baseline.call_median_us / r.call_median_us:>8.1f}x "
            f"{r.events_per_s:>12,.0f} {r.events_per_s / baseline.events_per_s:>12.1f}x"
        )
    print("(loop: publishing loop wall time per event, background threads' GIL share included;")
    print(" call median: one publish as the calling code sees it)")
    print("exporter alone (encoded events ready, caller idle):")
    for mode, rate in alone.items():
        print(f"  {mode:<8} {rate:>10,.0f} ev/s  {rate / baseline.events_per_s:>6.1f}x blocking per-event")


def main() -> None:
    if sys.argv[1:] == ["--serve-otlp"]:
        serve_otlp()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000, help="events per throughput round")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds")
    parser.add_argument("--caller-events", type=int, default=20_000, help="events per mode in the caller-cost part")
    parser.add_argument("--blocking-events", type=int, default=5_000, help="events for the blocking per-event run")
    args = parser.parse_args()
    for name in ("APPEVENTS_AUTH_TOKEN_URL", "APPEVENTS_AUTH_CLIENT_ID", "APPEVENTS_AUTH_CLIENT_SECRET"):
        os.environ.pop(name, None)
    os.environ["APPEVENTS_DAPR_PUBSUB"] = "events"
    load_at_start = f"{os.getloadavg()[0]:.1f}"
    sidecar = SidecarProcess()
    otlp = OtlpReceiverProcess()
    try:
        os.environ.update(sidecar.env())
        results, stats, prep_us = throughput(args.events, args.rounds, otlp)
        sidecar_after_throughput = sidecar.counters()
        otlp_counters = otlp.counters()
        caller = [blocking_per_event_call(args.blocking_events)]
        caller += [appevents_mode(mode, args.caller_events) for mode in ("binding", "batch", "pubsub")]
        alone = {mode: exporter_alone(mode, args.caller_events) for mode in ("binding", "batch", "pubsub")}
        counters = sidecar.counters()
    finally:
        sidecar.close()
        otlp.close()

    one, five, _ = os.getloadavg()
    print("\nDapr delivery; sidecar stand-in and OTLP receiver in other processes (loopback)")
    print(f"load average (1 min) at the start {load_at_start}, at the end {one:.1f} ({five:.1f} over 5 min)", end="")
    print(f" on {os.cpu_count()} CPUs")
    print_throughput(results, args.events, args.rounds, prep_us)
    print_caller(caller, alone, args.caller_events)
    print("goals (caller part): caller >=50x cheaper than blocking per-event; batch/pubsub >=50,000 ev/s delivered; ")
    print("                     binding >=2x blocking per-event throughput")
    print("\nEventStore.stats() of the throughput pipeline (accepted = delivered + failed + dropped + pending):")
    for name, s in stats.items():
        identity = s.accepted == s.delivered + s.failed + s.dropped + s.pending
        print(
            f"  {name}: accepted={s.accepted} delivered={s.delivered} failed={s.failed} dropped={s.dropped} "
            f"pending={s.pending}  identity {'holds' if identity else 'BROKEN'}"
            + (f"  failed {s.failed_reasons}" if s.failed_reasons else "")
            + (f"  dropped {s.dropped_reasons}" if s.dropped_reasons else "")
        )
    print(f"sidecar counted after the throughput part (1 warm-up event included): {sidecar_after_throughput}")
    print(f"sidecar counted at the end: {counters}")
    print(f"OTLP receiver counted (warm-up of {OTEL_BATCH} included): {otlp_counters}")


if __name__ == "__main__":
    main()
