"""The pipeline: the exporters named in the settings (plus any given), each on its own engine channel, and
the durable spool when ``APPEVENTS_SPOOL_PATH`` is set.

:meth:`Pipeline.submit` is the only part on the caller's path: one hand-off (see :mod:`appevents._engine`).

Exporters are built by name from the registry (:mod:`appevents._registry`, the ``appevents.exporters``
entry-point group), so the core never imports the exporter distributions.

Built by ``configure()``, the pipeline is built on the caller's thread and errors raise. Built on first use (the
first publish with nothing configured), it is built on a background thread: the first publish costs what any
publish costs, and events published meanwhile wait in a startup queue, then go their way in order.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from appevents._counting import DeliveryStats
from appevents._encoded import EncodedEvent, preferred_batch_size
from appevents._engine import SPOOL_STAGE, Channel, shutdown_exporter, sink_for
from appevents._errors import ConfigurationError
from appevents._metrics import EventTypeAttributes, instruments_for
from appevents._records import LOGGER_NAME
from appevents._registry import available_exporters, load_exporter, unknown_exporter
from appevents._settings import AppEventsSettings
from appevents._spool import Spool, destination_of
from appevents._spool_writer import SpoolWriter
from appevents._threads import start_background_thread
from appevents._variables import warn_unknown_variables
from appevents._version import __version__

__all__ = ["Pipeline", "build_pipeline"]

#: How long shutdown waits, past its deadline, for exporters it interrupted to return (all together).
_STOP_GRACE_S = 5.0
_logger = logging.getLogger("appevents")


def _resource(settings: AppEventsSettings) -> Resource:
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME itself; an application name that was
    # set (by any of its names) wins, the default does not override a service.name from the environment.
    attributes: dict[str, str] = {
        "appevents.tenant_id": settings.tenant_id,
        "telemetry.sdk.appevents.version": __version__,
    }
    if "application_name" in settings.model_fields_set:
        attributes["service.name"] = settings.application_name
    return Resource.create(attributes)


def _build_exporters(settings: AppEventsSettings, given: Mapping[str, object], *, strict: bool) -> dict[str, object]:
    """The exporters named in ``settings`` plus ``given``.

    ``strict`` (``configure()``): an unknown name or an exporter that cannot be built raises. Otherwise (built on
    first use): unknown names get one warning naming them and the installed ones, an exporter that cannot be built
    one error line; the others work."""
    warn_unknown_variables()
    installed = available_exporters()
    unknown = [name for name in settings.exporters if name not in installed and name not in given]
    if unknown and strict:
        load_exporter(unknown[0], settings)  # raises ConfigurationError naming it and the installed ones
    for name in unknown:
        problem, fix = unknown_exporter(name)
        _logger.warning("appevents: APPEVENTS_EXPORTERS: %s (%s); the others are used", problem, fix)
    built: dict[str, object] = {}
    for name in settings.exporters:
        if name in unknown or name in given:
            continue
        try:
            exporter = load_exporter(name, settings)
        except Exception as exc:
            if strict:
                raise
            _logger.error("appevents: exporter %r could not be built and is left out: %s", name, exc)
            continue
        if exporter is not None:
            built[name] = exporter
    built.update(given)
    return built


class Pipeline:
    """The configured exporters, each behind its engine channel, and the spool writer in durable mode."""

    def __init__(
        self,
        settings: AppEventsSettings,
        exporters: Mapping[str, object] | None = None,
        processors: Iterable[LogRecordProcessor] = (),
        *,
        background: bool = False,
        on_unrouted: Callable[[int], None] | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        # Self-metrics (appevents._metrics): bound now, as the first publish may come before the build is done.
        self._instruments = instruments_for(meter_provider)
        #: Events published, per ``event.type`` value (None: no such attribute). ``next()`` on an
        #: ``itertools.count`` is atomic in CPython: exact with any number of publishing threads, no lock.
        self._published: dict[str | None, itertools.count[int]] = {}
        #: Events whose hand-off is over (routed, queued for the build, or refused at the door): with the published
        #: counts, how many publishers are between the intake's closed-check and their append right now.
        self._handed = itertools.count()
        limit = settings.metrics_event_type_limit
        self._event_type_attributes = EventTypeAttributes(limit) if limit else None
        self.given_exporters: dict[str, object] = dict(exporters or {})
        self.extra_processors: tuple[LogRecordProcessor, ...] = tuple(processors)
        self.channels: dict[str, Channel] = {}
        #: The OTel resource of the records built for OTel exporters and processors (set once built).
        self.resource: Resource | None = None
        self.writer: SpoolWriter | None = None
        #: Why durable mode is off although APPEVENTS_SPOOL_PATH is set (the spool could not be opened at a build
        #: on first use; the exporters then go on in memory). None when durable mode is on, or not asked for.
        self.durability_lost: str | None = None
        self._on_unrouted = on_unrouted
        self._all: tuple[Channel, ...] = ()  # channels that take every event
        self._filtered: tuple[Channel, ...] = ()  # channels with an accepts() filter
        self._ready = False
        self._shutting_down = False
        self._closed = False
        self._startup: deque[EncodedEvent] = deque()
        self._build_lock = threading.RLock()  # re-entered by a signal handler that publishes during the build
        self._builder: threading.Thread | None = None
        if background:
            self._builder = threading.Thread(target=self._build_quietly, name="appevents-build", daemon=True)
            start_background_thread(self._builder)
        else:
            self._build(strict=True)
        self._instruments.observe(self)  # weakly: the gauges read it until shutdown (or until it is dropped)

    # -- building ------------------------------------------------------------------------------------------------
    def _build_quietly(self) -> None:
        try:
            self._build(strict=False)
        except Exception as exc:
            _logger.error("appevents: the event pipeline could not be built (%s); events are not published", exc)
            self._go_live()

    def _build(self, *, strict: bool) -> None:
        settings = self.settings
        exporters = _build_exporters(settings, self.given_exporters, strict=strict)
        for index, processor in enumerate(self.extra_processors):
            exporters[f"processor-{index}:{type(processor).__name__}"] = processor
        resource = self.resource = _resource(settings)
        scope = InstrumentationScope(LOGGER_NAME, __version__)
        spool: Spool | None = None
        if settings.spool_path is not None:
            if SPOOL_STAGE in exporters:
                for exporter in exporters.values():
                    shutdown_exporter(exporter)
                raise ConfigurationError(
                    f"an exporter is named {SPOOL_STAGE!r}, which in durable mode (APPEVENTS_SPOOL_PATH) names the "
                    "spool stage in stats() and the self-metrics: give the exporter another name"
                )
            try:
                spool = Spool(
                    settings.spool_path,
                    max_bytes=settings.spool_max_bytes,
                    exporters={name: destination_of(exporter) for name, exporter in exporters.items()},
                    sync=settings.spool_sync,
                )
            except Exception as exc:
                problem = f"the spool at {settings.spool_path} (APPEVENTS_SPOOL_PATH) cannot be opened: " + (
                    str(exc) if isinstance(exc, ConfigurationError) else f"{type(exc).__name__}: {exc}"
                )
                if strict:
                    for exporter in exporters.values():
                        shutdown_exporter(exporter)
                    raise ConfigurationError(problem) from exc
                # Built on first use, nobody can be told by an exception: the exporters go on in memory, without
                # durability, and that loss is said once here, by doctor and by appevents.spool.unusable.
                self.durability_lost = problem
                _logger.error(
                    "appevents: %s; events go to the exporters in memory, WITHOUT durability, until the spool is "
                    "fixed and the process restarted (appevents doctor tells what is wrong)",
                    problem,
                )
        channels = {
            name: Channel(
                name,
                exporter,
                sink_for(exporter, resource, scope),
                max_queue_size=settings.max_queue_size,
                max_batch=preferred_batch_size(exporter, settings.max_export_batch_size),
                schedule_delay_s=settings.schedule_delay_ms / 1000,
                spool_owner=spool.owner if spool is not None else None,
                spool_reader=spool.reader if spool is not None else None,
                metrics=self._instruments.stage(name),
            )
            for name, exporter in exporters.items()
        }
        # Going live is brief (threads started, the startup queue routed): publishers wait on this lock only while
        # the pipeline is not live yet, and the slow part (exporters, the spool) is done above.
        with self._build_lock:
            if self._closed:  # shut down while this was being built: start nothing
                for exporter in exporters.values():
                    shutdown_exporter(exporter)
                if spool is not None:
                    spool.close()
                return
            self.channels = {name: channel.start() for name, channel in channels.items()}
            if spool is not None:
                self.writer = SpoolWriter(
                    spool,
                    list(self.channels.values()),
                    commit_interval_s=settings.spool_commit_interval_ms / 1000,
                    max_inbox=settings.max_queue_size,
                    metrics=self._instruments.stage(SPOOL_STAGE),
                ).start()
            self._all = tuple(c for c in self.channels.values() if getattr(c.exporter, "accepts", None) is None)
            self._filtered = tuple(c for c in self.channels.values() if c not in self._all)
            self._go_live_locked()

    def _go_live(self) -> None:
        with self._build_lock:
            self._go_live_locked()

    def _go_live_locked(self) -> None:
        """Route what waited in the startup queue, in order, then let callers route directly."""
        while self._startup:
            self._route(self._startup.popleft())
        self._ready = True

    @property
    def has_destinations(self) -> bool:
        """False when nothing is configured, or once built without a single exporter."""
        if not self._ready:
            return bool(self.settings.exporters or self.given_exporters or self.extra_processors)
        return bool(self.channels)

    def exporter(self, name: str) -> object:
        """The exporter instance configured as ``name``."""
        return self.channels[name].exporter

    # -- publishing caller ---------------------------------------------------------------------------------------
    def submit(self, event: EncodedEvent) -> bool:
        """Hand one encoded event over: the caller's path, memory only, never raises for a full queue. False when
        it is known to be refused (no exporter, closed or full queues), True when taken (or waiting for the build).
        """
        by_type = self._event_type_attributes
        key = None if by_type is None else by_type(event.event_type)["event.type"]
        counter = self._published.get(key)
        next(counter if counter is not None else self._published.setdefault(key, itertools.count()))
        try:
            if not self._ready:
                with self._build_lock:
                    if not self._ready:
                        self._startup.append(event)
                        return True
            return self._route(event)
        finally:
            next(self._handed)

    def _route(self, event: EncodedEvent) -> bool:
        """Hand ``event`` to the spool writer or the channels that want it. False if every one of them refused it
        (full or closed) or there is no exporter at all; an event no channel wants has nowhere to go by design,
        and is not a refusal."""
        writer = self.writer
        waiter = event.waiter
        if writer is not None:
            if waiter is not None:
                waiter.add_parties(1)
            taken = writer.submit(event)
        else:
            filtered = self._filtered
            targets = (*self._all, *(c for c in filtered if c.wants(event))) if filtered else self._all
            if waiter is not None:
                waiter.add_parties(len(targets))
            taken = not targets and bool(self.channels)
            for channel in targets:
                taken = channel.offer(event) or taken
        if not self.channels and self._on_unrouted is not None:
            self._on_unrouted(1)
        if waiter is not None:
            waiter.release(bool(self.channels), "" if self.channels else "no_exporter")  # the router's own party
        return taken

    def room(self) -> int:
        """How many events :meth:`submit` takes now without dropping one for a full queue: the admission check of
        a publisher that would rather push back than drop (the OTLP bridge answers 429 when a request does not
        fit). Exact for a single publisher (queues only drain meanwhile); 0 before the pipeline is live."""
        if not self._ready or self._shutting_down:
            return 0
        if self.writer is not None:
            return self.writer.room()
        return min((channel.room() for channel in self.channels.values()), default=0)

    # -- draining ------------------------------------------------------------------------------------------------
    def flush(self, timeout_s: float) -> bool:
        """Wait until everything published so far is settled by every exporter; False if the timeout ran out."""
        deadline = time.monotonic() + timeout_s
        if not self._wait_built(deadline):
            return False
        if self.writer is not None and not self.writer.flush(deadline):
            return False
        seq = self.writer.last_seq if self.writer is not None else 0
        flushed = all([channel.flush(deadline, seq) for channel in self.channels.values()])
        for channel in self.channels.values():
            force_flush = getattr(channel.exporter, "force_flush", None)
            if force_flush is not None:
                flushed = bool(force_flush(max(0, int((deadline - time.monotonic()) * 1000)))) and flushed
        return flushed

    def wait_built(self, timeout_s: float) -> bool:
        """Wait (up to ``timeout_s``) for a background build to finish; True once the pipeline is live."""
        return self._wait_built(time.monotonic() + timeout_s)

    def _wait_built(self, deadline: float) -> bool:
        if self._builder is not None:
            self._builder.join(max(0.0, deadline - time.monotonic()))
        return self._ready

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Drain and stop every thread this pipeline started within ``timeout_s`` in all (plus a bounded grace
        for exporters interrupted at the deadline); then one warning with exactly what was not delivered and why.

        Returns False if any event was lost (failed, dropped, or left in memory). In durable mode what is left
        stays in the spool for the next start, and the warning says so.
        """
        deadline = time.monotonic() + timeout_s
        with self._build_lock:
            if self._shutting_down:
                return True
            self._shutting_down = True
        built = self._wait_built(deadline)
        with self._build_lock:
            self._closed = True  # a builder still at work starts nothing (see _build)
            lost_at_start = 0 if self._ready else len(self._startup)
            self._startup.clear()
            self._ready = True
        if not built:
            _logger.warning(
                "appevents: the event pipeline was still being built at shutdown; %d event(s) lost", lost_at_start
            )
        channels = list(self.channels.values())
        for stage in [self.writer] if self.writer is not None else channels:
            stage.refuse_new()
        self._wait_for_hand_offs(deadline)
        if self.writer is not None:
            self.writer.close_intake(deadline)
        for channel in channels:
            channel.begin_close()  # all drain together
        ended = [channel.join(deadline) for channel in channels]
        for channel, done in zip(channels, ended, strict=True):
            if not done:
                channel.stop()  # out of time: the exporter is shut down under its running export
        grace = time.monotonic() + _STOP_GRACE_S
        for channel, done in zip(channels, ended, strict=True):
            if done:
                shutdown_exporter(channel.exporter, channel.name)
            else:
                channel.join(grace)
            channel.count_leftovers()
        stats = self.stats()
        kept = self.writer.finish() if self.writer is not None else None
        alive = [c.name for c in channels if c.thread_alive]
        if self.writer is not None and self.writer.thread_alive:
            alive.append(SPOOL_STAGE)
        if self._builder is not None and self._builder.is_alive():
            alive.append("build")
        self._instruments.forget(self)
        spool = self.settings.spool_path if self.writer else None
        return _report(stats, timeout_s, spool=spool, kept=kept, alive=alive) and built

    def _wait_for_hand_offs(self, deadline: float) -> None:
        """Once the intake is closed: wait (by ``deadline``) for the publishers that passed its closed-check before
        it closed to finish their append, so that their events are drained and reported like the others rather
        than queued after the last count. Publishers arriving later are refused at the door, counted."""
        while _count_of(self._handed) < sum(_count_of(c) for c in list(self._published.values())):
            if time.monotonic() >= deadline:
                return
            time.sleep(0.001)

    def stats(self) -> dict[str, DeliveryStats]:
        """Counters per exporter (and of the ``spool`` stage in durable mode)."""
        stages = {SPOOL_STAGE: self.writer.stats()} if self.writer is not None else {}
        stages.update({name: channel.stats() for name, channel in self.channels.items()})
        return stages

    # -- observable gauges (appevents._metrics) -------------------------------------------------------------------
    def observe_queues(self) -> list[tuple[str, int]]:
        """(stage, events pending) per stage, for ``appevents.queue.size``."""
        return [(name, stats.pending) for name, stats in self.stats().items()]

    def observe_published(self) -> list[tuple[str | None, int]]:
        """(``event.type`` value or None, events published), for ``appevents.events.published``."""
        return [(key, _count_of(counter)) for key, counter in list(self._published.items())]

    def observe_durability_lost(self) -> str | None:
        """The spool path while durable mode is off for want of a usable spool (``appevents.spool.unusable``)."""
        return None if self.durability_lost is None else str(self.settings.spool_path)

    def observe_spool(self) -> tuple[str, int, int] | None:
        """(spool path, rows, bytes) as the writer last read them, for ``appevents.spool.size``/``.bytes``."""
        writer = self.writer
        size = writer.size() if writer is not None else None
        return None if size is None or writer is None else (str(writer.spool.path), *size)


def _count_of(counter: itertools.count[int]) -> int:
    """How many times ``next()`` was called on a fresh ``itertools.count``: it tells its next value only in its
    repr, ``count(N)``."""
    return int(repr(counter)[6:-1])


def _report(
    stats: Mapping[str, DeliveryStats], timeout_s: float, *, spool: object, alive: list[str], kept: int | None = None
) -> bool:
    """One warning with what was not delivered, per stage and reason; True if nothing was lost. ``kept``: how many
    of this run's events are left in the spool (counted there after the last checkpoint)."""
    parts = []
    lost = False
    for name, s in stats.items():
        if name == SPOOL_STAGE:
            if s.dropped or s.pending or s.failed:
                lost = lost or bool(s.dropped or s.pending)
                refused = f"{s.dropped} refused {s.dropped_reasons}" if s.dropped else ""
                in_memory = f"{s.failed} not made durable (the spool failed; sent in memory)" if s.failed else ""
                uncommitted = f"{s.pending} never committed (lost at exit)" if s.pending else ""
                parts.append("spool: " + ", ".join(p for p in (refused, in_memory, uncommitted) if p))
            if kept:
                parts.append(f"spool: {kept} event(s) of this run kept for the next start")
            continue
        if s.failed or s.dropped or s.pending:
            lost = lost or bool(s.failed or s.dropped or (s.pending and spool is None))
            details = []
            if s.failed:
                details.append(f"{s.failed} failed {s.failed_reasons}")
            if s.dropped:
                details.append(f"{s.dropped} dropped {s.dropped_reasons}")
            if s.pending:
                details.append(
                    f"{s.pending} {'not delivered yet (in the spool)' if spool is not None else 'undelivered'}"
                )
            parts.append(f"{name}: {s.delivered} of {s.accepted} delivered, " + ", ".join(details))
    if alive:
        parts.append(f"threads still running after the grace period: {', '.join(alive)}")
    if parts:
        where = f"; what is kept stays in the spool at {spool} for the next start" if spool is not None else ""
        _logger.warning(
            "appevents: shutdown (within %.1fs) did not deliver everything — %s%s",
            timeout_s,
            "; ".join(parts),
            where,
        )
    return not lost and not alive


def build_pipeline(
    settings: AppEventsSettings,
    exporters: Mapping[str, object] | None = None,
    extra_processors: Iterable[LogRecordProcessor] = (),
    *,
    meter_provider: MeterProvider | None = None,
) -> Pipeline:
    """Build the pipeline for ``settings``: the named exporters plus any given instances (errors raise).
    ``meter_provider``: where its self-metrics go (default: see :func:`appevents._metrics.instruments_for`)."""
    return Pipeline(settings, exporters, extra_processors, meter_provider=meter_provider)
