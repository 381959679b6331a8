"""Self-metrics: what the delivery engine counts, through the OpenTelemetry metrics API.

Recorded with ``opentelemetry.metrics.get_meter("appevents", __version__)``, so whatever ``MeterProvider`` the
application sets (a Prometheus reader, OTLP, the console) sees them, even when it is set after appevents was
imported (the API's proxy meter hands the instruments over); with no provider set they cost what the API's
no-op instruments cost. :func:`use_meter_provider` points the pipelines built afterwards at another provider
(without touching the global one); ``Pipeline(meter_provider=...)`` does it for one pipeline.

Instruments (units per the OpenTelemetry conventions):

* ``appevents.events.published`` (observable counter, ``{event}``) — events handed to the pipeline, on the publishing
  caller's path; attribute ``event.type`` only when ``APPEVENTS_METRICS_EVENT_TYPE_LIMIT`` > 0 (the first N
  distinct types of a pipeline get their own value, the rest count as ``other``);
* ``appevents.events.exported`` / ``.failed`` / ``.dropped`` (counters, ``{event}``, attribute ``exporter``;
  ``failed`` and ``dropped`` also ``reason``) — exactly ``EventStore.stats()``'s ``delivered``, ``failed_reasons``
  and ``dropped_reasons`` per stage. The ``spool`` stage (durable mode) reports as ``exporter="spool"``: events
  committed to the spool count as exported there, refused ones as dropped (``spool_full``, ``queue_full``,
  ``shutdown``), ones a failing disk could not take as failed (``spool_error``: they went on in memory);
* ``appevents.events.refused`` (observable counter, ``{event}``, ``reason``) — events refused at publish, before
  the pipeline took them, as ``EventStore.unpublished_count()`` counts them: ``no_destination`` (nothing
  configured, or every exporter failed to build), ``workflow_unconfigured`` (published from workflow code with no
  pipeline configured in the process), ``interpreter_exit`` (after the exit drain), ``too_large`` (data grown past
  the cap after construction), ``invalid_data`` (data changed in place into something that is not JSON),
  ``error:<type>`` (unexpected);
* ``appevents.events.retried`` (counter, ``{event}``, ``exporter``) — events offered again after a destination
  answered ``retry`` (durable mode), once per event and re-offer;
* ``appevents.export.duration`` (histogram, ``s``, ``exporter``) — one point per export call;
* ``appevents.queue.size`` (observable gauge, ``{event}``, ``exporter``) — events pending per stage (a stage's
  ``stats().pending``: queued, or in durable mode spooled and not yet settled by that exporter);
* ``appevents.spool.size`` / ``appevents.spool.bytes`` (observable gauges, ``{event}`` / ``By``; durable mode) —
  rows and event bytes in the spool file, every process sharing it included. Read by the spool writer on its own
  thread (a ``COUNT(*)``: about 15 ms per million rows), at most once a second and only while something collects;
  a collection reports the last figure read, so the first one after a pipeline starts reports none.

Observable gauges are registered once per meter provider and read the pipelines alive at collection time (a
weak registry): a pipeline that was shut down (or replaced by ``configure()``) reports nothing.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from appevents._version import __version__

__all__ = [
    "METER_NAME",
    "EventTypeAttributes",
    "Instruments",
    "Observed",
    "StageMetrics",
    "instruments_for",
    "use_meter_provider",
]

METER_NAME = "appevents"
#: Bucket boundaries (seconds) of ``appevents.export.duration``: the semantic conventions' advice for durations.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0)
#: The ``event.type`` of the types past ``metrics_event_type_limit``.
OTHER_EVENT_TYPE = "other"


class Observed(Protocol):
    """What the observable gauges read: a live pipeline."""

    def observe_queues(self) -> Iterable[tuple[str, int]]:
        """(stage, events pending) per stage."""
        ...

    def observe_spool(self) -> tuple[str, int, int] | None:
        """(spool path, rows, bytes), or None: no spool, or no figure read yet."""
        ...

    def observe_published(self) -> Iterable[tuple[str | None, int]]:
        """(``event.type`` value or None, events published) so far."""
        ...

    def observe_durability_lost(self) -> str | None:
        """The spool path when durable mode was asked for but its spool could not be opened, else None."""
        ...


class Instruments:
    """The appevents instruments of one meter provider, created once (an SDK meter keeps the first callbacks of an
    observable instrument registered twice, so a second set would never be called)."""

    def __init__(self, meter: Meter) -> None:
        #: The ``appevents`` meter these instruments are on (the bridge adds its own instruments to it).
        self.meter = meter
        # Observed, not added to: the publishing caller only bumps an atomic per-pipeline count (0.05 µs), where a
        # synchronous SDK counter costs it about 3 µs. Pipelines shut down leave their totals here (monotonic).
        self._retired_published: Counter[str | None] = Counter()
        meter.create_observable_counter(
            "appevents.events.published",
            callbacks=[self._observe_published],
            unit="{event}",
            description="Events handed to the appevents pipeline",
        )
        self.exported = meter.create_counter(
            "appevents.events.exported",
            unit="{event}",
            description="Events an exporter delivered (spool stage: committed to the spool)",
        )
        self.failed = meter.create_counter(
            "appevents.events.failed", unit="{event}", description="Events an exporter could not deliver, by reason"
        )
        self.dropped = meter.create_counter(
            "appevents.events.dropped", unit="{event}", description="Events deliberately not sent, by reason"
        )
        meter.create_observable_counter(
            "appevents.events.refused",
            callbacks=[_observe_refusals],
            unit="{event}",
            description="Events refused at publish, before any exporter saw them, by reason",
        )
        self.retried = meter.create_counter(
            "appevents.events.retried",
            unit="{event}",
            description="Events offered again to an exporter after it could not take them for now (durable mode)",
        )
        self.export_duration = meter.create_histogram(
            "appevents.export.duration",
            unit="s",
            description="Duration of one export call (one batch)",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self._lock = threading.Lock()
        self._observed: weakref.WeakSet[Observed] = weakref.WeakSet()
        meter.create_observable_gauge(
            "appevents.queue.size",
            callbacks=[self._observe_queues],
            unit="{event}",
            description="Events pending per exporter (queued, or spooled and not settled yet)",
        )
        meter.create_observable_gauge(
            "appevents.spool.size",
            callbacks=[self._observe_spool_rows],
            unit="{event}",
            description="Events in the durable spool",
        )
        meter.create_observable_gauge(
            "appevents.spool.unusable",
            callbacks=[self._observe_spool_unusable],
            unit="1",
            description="1 while durable mode is asked for (APPEVENTS_SPOOL_PATH) but its spool could not be "
            "opened: the exporters go on in memory, without durability",
        )
        meter.create_observable_gauge(
            "appevents.spool.bytes",
            callbacks=[self._observe_spool_bytes],
            unit="By",
            description="Event bytes in the durable spool",
        )

    def stage(self, name: str) -> StageMetrics:
        return StageMetrics(self, name)

    # -- the weak registry the gauges read -----------------------------------------------------------------------
    def observe(self, source: Observed) -> None:
        with self._lock:
            self._observed.add(source)

    def forget(self, source: Observed) -> None:
        with self._lock:
            if source in self._observed:
                self._retired_published.update(dict(source.observe_published()))
            self._observed.discard(source)

    def forget_all(self) -> None:
        with self._lock:
            self._observed.clear()

    def _live(self) -> list[Observed]:
        with self._lock:
            return list(self._observed)

    def _observe_published(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            published = Counter(self._retired_published)
        for source in self._live():
            published.update(dict(source.observe_published()))
        return [
            Observation(count, {} if event_type is None else {"event.type": event_type})
            for event_type, count in published.items()
        ]

    def _observe_queues(self, options: CallbackOptions) -> Iterable[Observation]:
        pending: Counter[str] = Counter()  # several live pipelines (rare): their queues add up
        for source in self._live():
            for stage, count in source.observe_queues():
                pending[stage] += count
        return [Observation(count, {"exporter": stage}) for stage, count in pending.items()]

    def _spools(self) -> dict[str, tuple[int, int]]:
        spools: dict[str, tuple[int, int]] = {}  # one figure per file, however many pipelines share it
        for source in self._live():
            figure = source.observe_spool()
            if figure is not None:
                spools[figure[0]] = figure[1:]
        return spools

    def _observe_spool_rows(self, options: CallbackOptions) -> Iterable[Observation]:
        spools = self._spools()
        return [Observation(sum(rows for rows, _ in spools.values()))] if spools else []

    def _observe_spool_bytes(self, options: CallbackOptions) -> Iterable[Observation]:
        spools = self._spools()
        return [Observation(sum(size for _, size in spools.values()))] if spools else []

    def _observe_spool_unusable(self, options: CallbackOptions) -> Iterable[Observation]:
        lost = {path for source in self._live() if (path := source.observe_durability_lost()) is not None}
        return [Observation(1, {"spool.path": path}) for path in sorted(lost)]


class StageMetrics:
    """One stage's (exporter's, or the spool's) recording: the instruments with attribute sets built once."""

    __slots__ = ("_attributes", "_instruments", "_reasons")

    def __init__(self, instruments: Instruments, exporter: str) -> None:
        self._instruments = instruments
        self._attributes = {"exporter": exporter}
        self._reasons: dict[tuple[str, str], dict[str, str]] = {}

    def _with_reason(self, kind: str, reason: str) -> dict[str, str]:
        attributes = self._reasons.get((kind, reason))
        if attributes is None:
            attributes = self._reasons.setdefault((kind, reason), {**self._attributes, "reason": reason})
        return attributes

    def exported(self, count: int) -> None:
        if count:
            self._instruments.exported.add(count, self._attributes)

    def failed(self, reasons: Mapping[str, int]) -> None:
        for reason, count in reasons.items():
            self._instruments.failed.add(count, self._with_reason("failed", reason))

    def dropped(self, reasons: Mapping[str, int]) -> None:
        for reason, count in reasons.items():
            if count:
                self._instruments.dropped.add(count, self._with_reason("dropped", reason))

    def dropped_one(self, reason: str) -> None:
        self._instruments.dropped.add(1, self._with_reason("dropped", reason))

    def retried(self, count: int) -> None:
        if count:
            self._instruments.retried.add(count, self._attributes)

    def export_duration(self, seconds: float) -> None:
        self._instruments.export_duration.record(seconds, self._attributes)


class EventTypeAttributes:
    """``event.type`` attribute sets for ``appevents.events.published``: the first ``limit`` distinct types get
    their own (built once), later ones share ``other``. On the publish path, so without a lock (a signal handler
    may publish on a thread interrupted in here): publishers racing for the last places may admit a few more."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._known: dict[str, dict[str, str]] = {}
        self._other = {"event.type": OTHER_EVENT_TYPE}

    def __call__(self, event_type: str) -> dict[str, str]:
        attributes = self._known.get(event_type)
        if attributes is not None:
            return attributes
        if len(self._known) >= self._limit:
            return self._other
        return self._known.setdefault(event_type, {"event.type": event_type})


_lock = threading.Lock()
_global: Instruments | None = None
_by_provider: weakref.WeakKeyDictionary[MeterProvider, Instruments] = weakref.WeakKeyDictionary()
_override: MeterProvider | None = None


def use_meter_provider(provider: MeterProvider | None) -> None:
    """Record the metrics of pipelines built from now on to ``provider`` (None, the default: OpenTelemetry's
    global provider, ``opentelemetry.metrics.set_meter_provider``). Pipelines already built keep theirs."""
    global _override
    _override = provider


#: Refusals at publish by reason, since the last ``EventStore.shutdown()`` (as ``unpublished_count()``). Counted
#: without a lock or an instrument call: a refusal may happen in a signal handler that interrupted this thread in a
#: lock, or in workflow code, where creating a lock is a restricted call. ``next()`` on an ``itertools.count`` and
#: ``dict.setdefault`` are atomic in CPython.
_refusals: dict[str, itertools.count[int]] = {}


def count_refusal(reason: str) -> None:
    """One event refused at publish for ``reason`` (``appevents.events.refused``)."""
    counter = _refusals.get(reason)
    next(counter if counter is not None else _refusals.setdefault(reason, itertools.count()))


def reset_refusals() -> None:
    _refusals.clear()


def _observe_refusals(options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(int(repr(counter)[6:-1]), {"reason": reason})  # count(N): next() was called N times
        for reason, counter in list(_refusals.items())
    ]


def instruments_for(provider: MeterProvider | None = None) -> Instruments:
    """The instruments of ``provider``, else of :func:`use_meter_provider`'s, else of the global provider —
    created on first use, then shared. The global ones are bound through the API's proxy, so a provider set
    later still receives them."""
    global _global
    provider = provider if provider is not None else _override
    if provider is metrics.get_meter_provider():
        provider = None  # the global provider: one set of instruments, whichever way it is named
    with _lock:
        if provider is None:
            if _global is None:
                _global = Instruments(metrics.get_meter(METER_NAME, __version__))
            return _global
        found = _by_provider.get(provider)
        if found is None:
            found = _by_provider[provider] = Instruments(provider.get_meter(METER_NAME, __version__))
        return found


def _forget_after_fork() -> None:
    """A forked child starts with no live pipeline: the parent's are not its to report."""
    global _lock
    _lock = threading.Lock()
    for instruments in [_global, *_by_provider.values()]:
        if instruments is not None:
            instruments._lock = threading.Lock()
            instruments.forget_all()
            instruments._retired_published.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
