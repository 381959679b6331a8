"""Caller cost of ``EventStore.publish`` against a bare OpenTelemetry ``Logger.emit``, measured in one run.

Baseline: the OTel SDK's own ``LoggerProvider`` + ``BatchLogRecordProcessor`` + a no-op exporter, emitting a
record with the same JSON body (what the cheapest "event as a log record" costs the caller).
appevents: ``EventStore.publish`` of a pre-built event — enrichment (application, time, topic, Temporal lookups,
trace context), JSON serialisation and the log record emit — into a pipeline with a no-op exporter.
Events are built before timing; construction (pydantic validation) is reported separately.

Run: ``./dev bench`` or ``.venv/bin/python bench/publish_cost.py``. Prints medians in µs and the ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult

from appevents import AppEventsSettings, Event, EventStore, configure

ROUNDS = 15
PER_ROUND = 2_000
DATA = {"order_id": "order-789", "customer_id": "cust-42", "total_amount": 129.5, "item_count": 3}


class NoopExporter(LogRecordExporter):
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def timed_calls(call: Callable[[], object], samples: list[float]) -> None:
    # Each call is timed on its own: the median is the caller's cost, free of the time background threads
    # (the emitter, the batch processor) take the GIL between calls. Throughput is reported separately.
    clock = time.perf_counter_ns
    for _ in range(PER_ROUND):
        start = clock()
        call()
        samples.append((clock() - start) / 1000)


def bare_emit_round(provider: LoggerProvider, body: str, samples: list[float]) -> None:
    logger = provider.get_logger("bench")
    timed_calls(lambda: logger.emit(body=body, event_name="order.received"), samples)
    provider.force_flush()


def attributes_emit_round(provider: LoggerProvider, attributes: dict[str, object], samples: list[float]) -> None:
    logger = provider.get_logger("bench")
    timed_calls(lambda: logger.emit(attributes=attributes, event_name="order.received"), samples)  # type: ignore[arg-type]
    provider.force_flush()


def publish_round(samples: list[float]) -> float:
    events = iter([Event(event_type="order.received", data=DATA) for _ in range(PER_ROUND)])
    start = time.perf_counter()
    timed_calls(lambda: EventStore.publish(next(events)), samples)
    EventStore.flush_sync(30)
    return PER_ROUND / (time.perf_counter() - start)


def construct_and_publish_round(samples: list[float]) -> None:
    timed_calls(lambda: EventStore.publish(Event(event_type="order.received", data=DATA)), samples)
    EventStore.flush_sync(30)


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


def main() -> None:
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(NoopExporter(), max_queue_size=100_000))
    configure(
        AppEventsSettings(exporters=[], max_queue_size=100_000, application_name="bench"),
        exporters={"noop": NoopExporter()},
    )
    sample = EventStore.enrich_event_metadata(Event(event_type="order.received", data=DATA))
    body = sample.model_dump_json()
    # The usual hand-written OTel event: the same fields flattened into attributes.
    flat = {f"data.{k}": v for k, v in DATA.items()} | {
        f"metadata.{k}": v for k, v in sample.metadata.model_dump().items() if v is not None
    }
    bare_emit_round(provider, body, [])  # warm up every path
    attributes_emit_round(provider, flat, [])
    publish_round([])
    samples: dict[str, list[float]] = {k: [] for k in ("bare", "attrs", "publish", "both")}
    rates = []
    for _ in range(ROUNDS):  # interleaved, so every variant sees the same machine
        bare_emit_round(provider, body, samples["bare"])
        attributes_emit_round(provider, flat, samples["attrs"])
        rates.append(publish_round(samples["publish"]))
        construct_and_publish_round(samples["both"])
    provider.shutdown()
    EventStore.shutdown()
    median = {k: statistics.median(v) for k, v in samples.items()}
    print(f"event JSON: {len(body)} bytes; {ROUNDS} rounds x {PER_ROUND} calls; per-call median (p99) in us")
    for key, label in (
        ("bare", "bare OTel Logger.emit, JSON body (BatchLogRecordProcessor, no-op)"),
        ("attrs", f"bare OTel Logger.emit, {len(flat)} flattened attributes (same)"),
        ("publish", "EventStore.publish of a built Event (enrich + serialise + hand-off)"),
        ("both", "Event(...) + EventStore.publish (validation + all of the above)"),
    ):
        print(f"{label:<70} {median[key]:7.2f} ({p(samples[key], 99):7.2f})")
    print(f"publish -> exported throughput (emitter + delivery, no-op exporter): {statistics.median(rates):,.0f}/s")
    print(f"ratio publish / bare JSON-body emit:              {median['publish'] / median['bare']:.2f}  (goal <= 1.0)")
    print(f"ratio validate+publish / bare JSON-body emit:     {median['both'] / median['bare']:.2f}")
    print(f"ratio validate+publish / attribute-style emit:    {median['both'] / median['attrs']:.2f}")


if __name__ == "__main__":
    main()
