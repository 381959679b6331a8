"""Caller cost of publishing, against a bare OpenTelemetry ``Logger.emit`` and with the durable spool on and off,
plus the latency of ``publish(event, wait=True)`` — all measured in one run.

    .venv/bin/python bench/publish_cost.py      (or ./dev bench publish_cost)

appevents runs into a no-op *encoded* exporter (an ``EventExporter`` whose ``export_events`` does nothing, passed
with ``configure(exporters=...)``): no destination cost, no OTel record built on the delivery thread, so what is
measured is the caller's own cost (and the engine behind it). ``local`` (the SQLite event log) appears only in the
``wait=True`` latencies, beside the no-op exporter.

1. Per call, median (p99) in µs over interleaved rounds, events built before timing unless said otherwise:

   - bare OTel ``Logger.emit`` of the event JSON as body (``LoggerProvider`` + ``BatchLogRecordProcessor`` + a no-op
     exporter): the cheapest "event as a log record";
   - the same with the event's fields flattened into attributes (the usual hand-written OTel event);
   - ``EventStore.publish`` of a built event (enrich + redaction scan with the default keys + serialise +
     hand-off), and ``Event(...)`` + publish (validation included);
   - ``await EventStore.publish_event(event)`` with the spool off (memory queue) and on (``APPEVENTS_SPOOL_PATH``
     in a temp dir: the hand-off goes to the spool writer's inbox; the writer group-commits in the background).

   Ratios: publish / bare JSON-body emit and ``Event(...)`` + publish / bare JSON-body emit (goals <= 1.0);
   spool on / off for ``publish_event`` (goal <= 1.2).

2. Redaction (``APPEVENTS_REDACT_KEYS``): ``EventStore.publish`` with the default keys vs ``redact_keys=[]`` (off),
   for events with nothing to redact — the 4-key data above and a nested 22-key payload (objects in objects, objects
   in an array) — per call median (p99) in µs over interleaved rounds. Ratio on / off: goal <= 1.10.

3. ``EventStore.publish(event, wait=True)`` latency, one call at a time, p50/p99 in µs: with the spool it returns
   once the event is durable (committed to the spool); without, once the exporter has delivered it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult

from appevents import AppEventsSettings, Event, EventStore, configure
from appevents._settings import DEFAULT_REDACT_KEYS
from appevents.exporting import EncodedEvent, ExportOutcome

ROUNDS = 15
PER_ROUND = 2_000
WAIT_SAMPLES = 1_000
DATA = {"order_id": "order-789", "customer_id": "cust-42", "total_amount": 129.5, "item_count": 3}
#: 22 keys at four levels, none of them a credential name: what redaction scans and leaves as it is.
NESTED = {
    "order_id": "order-789",
    "customer": {"id": "cust-42", "name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"},
    "items": [{"sku": "A-1", "quantity": 2, "unit_price": 10.5}, {"sku": "B-2", "quantity": 1, "unit_price": 99.0}],
    "shipping": {"method": "express", "address": {"city": "Paris", "postcode": "75001", "country": "FR"}},
    "total_amount": 120.0,
    "currency": "EUR",
    "status": "new",
}


class NoopExporter(LogRecordExporter):
    """The OTel baseline's exporter."""

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class NoopEventExporter:
    """appevents' exporter: the encoded path, does nothing (every event delivered)."""

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        return ExportOutcome()

    def shutdown(self) -> None:
        pass


def use(
    spool: Path | None = None, exporter: str = "noop", local_path: Path | None = None, *, redact: bool = True
) -> None:
    """Configure appevents: the no-op encoded exporter (or ``local``), the spool at ``spool`` if given, redaction
    with the default keys (or off)."""
    settings = AppEventsSettings(
        exporters=["local"] if exporter == "local" else [],
        max_queue_size=100_000,
        application_name="bench",
        spool_path=spool,
        **({"local_path": local_path} if local_path is not None else {}),
        redact_keys=list(DEFAULT_REDACT_KEYS) if redact else [],
    )
    configure(settings, exporters={"noop": NoopEventExporter()} if exporter == "noop" else None)  # type: ignore[dict-item]


class Drain:
    """``EventStore.flush_sync``, then wait until the stats show nothing pending; counts the flushes that returned
    True while events were still pending (seen in spool mode: a flush can return between the spool writer counting
    a commit and telling the channels about it)."""

    def __init__(self) -> None:
        self.flushes = {"spool off": 0, "spool on": 0}
        self.early = {"spool off": 0, "spool on": 0}

    def __call__(self) -> None:
        pipeline = EventStore.pipeline()
        mode = "spool on" if pipeline is not None and pipeline.writer is not None else "spool off"
        ok = EventStore.flush_sync(30)
        self.flushes[mode] += 1
        if ok and any(s.pending for s in EventStore.stats().values()):
            self.early[mode] += 1
        deadline = time.monotonic() + 30
        while any(s.pending for s in EventStore.stats().values()) and time.monotonic() < deadline:
            EventStore.flush_sync(1)


drain = Drain()


def timed_calls(call: Callable[[], object], samples: list[float]) -> None:
    # Each call is timed on its own: the median is the caller's cost, free of the time background threads
    # (the batch processor, the engine's threads, the spool writer) take the GIL between calls. Throughput is
    # reported separately.
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


def publish_round(samples: list[float], data: dict[str, object] = DATA) -> float:
    events = iter([Event(event_type="order.received", data=data) for _ in range(PER_ROUND)])
    start = time.perf_counter()
    timed_calls(lambda: EventStore.publish(next(events)), samples)
    drain()
    return PER_ROUND / (time.perf_counter() - start)


def construct_and_publish_round(samples: list[float]) -> None:
    timed_calls(lambda: EventStore.publish(Event(event_type="order.received", data=DATA)), samples)
    drain()


def publish_event_round(loop: asyncio.AbstractEventLoop, samples: list[float]) -> float:
    """``await EventStore.publish_event(event)`` per event, each await timed; returns publish->settled events/s."""
    events = [Event(event_type="order.received", data=DATA) for _ in range(PER_ROUND)]

    async def run() -> None:
        clock = time.perf_counter_ns
        publish_event = EventStore.publish_event
        for event in events:
            start = clock()
            await publish_event(event)
            samples.append((clock() - start) / 1000)

    gc.collect()
    start = time.perf_counter()
    loop.run_until_complete(run())
    drain()
    return PER_ROUND / (time.perf_counter() - start)


def wait_latencies(samples: list[float]) -> None:
    """``publish(event, wait=True)`` one at a time: µs until it returns (durable, or delivered)."""
    events = [Event(event_type="order.received", data=DATA) for _ in range(WAIT_SAMPLES)]
    clock = time.perf_counter_ns
    failed = 0
    for event in events:
        start = clock()
        ok = EventStore.publish(event, wait=True, timeout_s=10)
        samples.append((clock() - start) / 1000)
        failed += not ok
    if failed:
        print(f"  !! {failed} publish(wait=True) calls returned False")


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


def check_stats(label: str) -> None:
    """Everything published is settled and nothing lost (the accounting identity holds)."""
    for name, s in EventStore.stats().items():
        if s.failed or s.dropped or s.pending or s.accepted != s.delivered:
            print(f"  !! {label}: {name} {s}")


def redaction_costs() -> dict[str, list[float]]:
    """``publish`` of events with nothing to redact, redaction on (default keys) and off, interleaved rounds."""
    variants = {
        "flat on": (DATA, True),
        "flat off": (DATA, False),
        "nested on": (NESTED, True),
        "nested off": (NESTED, False),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for data, redact in variants.values():  # warm up every path
        use(redact=redact)
        publish_round([], data)
    for _ in range(ROUNDS):
        for name, (data, redact) in variants.items():
            use(redact=redact)
            publish_round(samples[name], data)
            check_stats(f"redaction {name}")
    EventStore.shutdown()
    return samples


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="appevents-bench-") as tmp:
        run(Path(tmp))


def run(tmp: Path) -> None:
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(NoopExporter(), max_queue_size=100_000))
    use()
    sample = EventStore.enrich_event_metadata(Event(event_type="order.received", data=DATA))
    body = sample.model_dump_json()
    # The usual hand-written OTel event: the same fields flattened into attributes.
    flat = {f"data.{k}": v for k, v in DATA.items()} | {
        f"metadata.{k}": v for k, v in sample.metadata.model_dump().items() if v is not None
    }
    loop = asyncio.new_event_loop()
    spool_paths = iter(tmp / f"spool-{n}.db" for n in range(2 * ROUNDS + 2))
    bare_emit_round(provider, body, [])  # warm up every path
    attributes_emit_round(provider, flat, [])
    publish_round([])
    publish_event_round(loop, [])
    use(next(spool_paths))
    publish_event_round(loop, [])
    keys = ("bare", "attrs", "publish", "both", "async", "async_spool")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    rates: dict[str, list[float]] = {"publish": [], "async": [], "async_spool": []}
    for _ in range(ROUNDS):  # interleaved, so every variant sees the same machine
        bare_emit_round(provider, body, samples["bare"])
        attributes_emit_round(provider, flat, samples["attrs"])
        use()
        rates["publish"].append(publish_round(samples["publish"]))
        construct_and_publish_round(samples["both"])
        rates["async"].append(publish_event_round(loop, samples["async"]))
        check_stats("spool off")
        use(next(spool_paths))
        rates["async_spool"].append(publish_event_round(loop, samples["async_spool"]))
        check_stats("spool on")
    provider.shutdown()

    waits: dict[str, list[float]] = {}
    for label, spool, exporter in (
        ("no spool, no-op exporter (delivered)", None, "noop"),
        ("spool, no-op exporter (committed)", next(spool_paths), "noop"),
        ("no spool, local exporter (delivered = in the SQLite log)", None, "local"),
    ):
        use(spool, exporter, local_path=tmp / "events.db")
        EventStore.publish(Event(event_type="order.received", data=DATA), wait=True)  # warm up: opens the files
        waits[label] = []
        wait_latencies(waits[label])
        drain()
        check_stats(label)
    EventStore.shutdown()
    loop.close()
    redaction = redaction_costs()

    median = {k: statistics.median(v) for k, v in samples.items()}
    one, five, _ = os.getloadavg()
    print(f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs")
    print(f"event JSON: {len(body)} bytes; {ROUNDS} rounds x {PER_ROUND} calls; per-call median (p99) in µs")
    print("appevents exporter: a no-op encoded exporter (EventExporter), so only the caller's side is measured")
    for key, label in (
        ("bare", "bare OTel Logger.emit, JSON body (BatchLogRecordProcessor, no-op)"),
        ("attrs", f"bare OTel Logger.emit, {len(flat)} flattened attributes (same)"),
        ("publish", "EventStore.publish of a built Event (enrich, redact, encode, hand-off)"),
        ("both", "Event(...) + EventStore.publish (validation + all of the above)"),
        ("async", "await EventStore.publish_event(event), spool off"),
        ("async_spool", "await EventStore.publish_event(event), spool on (APPEVENTS_SPOOL_PATH)"),
    ):
        print(f"{label:<70} {median[key]:7.2f} ({p(samples[key], 99):7.2f})")
    print("publish -> settled throughput (engine + no-op exporter; spool on: + commit, read back, export):")
    print(f"  publish {statistics.median(rates['publish']):,.0f}/s", end="")
    print(f"; publish_event spool off {statistics.median(rates['async']):,.0f}/s", end="")
    print(f", spool on {statistics.median(rates['async_spool']):,.0f}/s")
    print(f"ratio publish / bare JSON-body emit:              {median['publish'] / median['bare']:.2f}  (goal <= 1.0)")
    print(f"ratio validate+publish / bare JSON-body emit:     {median['both'] / median['bare']:.2f}  (goal <= 1.0)")
    print(f"ratio validate+publish / attribute-style emit:    {median['both'] / median['attrs']:.2f}")
    print(
        f"ratio publish_event spool on / off:               {median['async_spool'] / median['async']:.2f}"
        "  (goal <= 1.2)"
    )
    if any(drain.early.values()):
        early = ", ".join(f"{mode} {drain.early[mode]} of {drain.flushes[mode]}" for mode in drain.flushes)
        print(f"!! EventStore.flush_sync returned True with events still pending: {early} flushes")
        print("   (the rates above wait until EventStore.stats() shows nothing pending)")
    print("\nredaction (APPEVENTS_REDACT_KEYS), events with nothing to redact; publish per-call median (p99) in µs:")
    for key, label in (
        ("flat on", "4-key data, default keys"),
        ("flat off", "4-key data, redaction off (redact_keys=[])"),
        ("nested on", "nested 22-key data, default keys"),
        ("nested off", "nested 22-key data, redaction off"),
    ):
        print(f"  {label:<68} {statistics.median(redaction[key]):7.2f} ({p(redaction[key], 99):7.2f})")
    for shape in ("flat", "nested"):
        ratio = statistics.median(redaction[f"{shape} on"]) / statistics.median(redaction[f"{shape} off"])
        print(f"ratio redaction on / off, {shape + ' data:':<14}             {ratio:.2f}  (goal <= 1.10)")
    print(f"\npublish(event, wait=True) latency, {WAIT_SAMPLES} calls one at a time, µs:")
    print(f"{'':<58} {'p50':>8} {'p99':>8}")
    for label, values in waits.items():
        print(f"{label:<58} {statistics.median(values):8.1f} {p(values, 99):8.1f}")


if __name__ == "__main__":
    main()
