"""``EventStore``: the seed's facade. Class methods only; no instance needed.

``publish_event`` enriches the event and hands it to the OTel pipeline; it never raises and never waits for
delivery (the seed's promise: fire-and-forget, graceful degradation). Failures after that point are the
exporters' to retry, count and report.
"""

from __future__ import annotations

import asyncio
import atexit
import calendar
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from opentelemetry import trace
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk._logs.export import LogRecordExporter

from appevents import _runtime
from appevents.delivery import DeliveryStats, LogOnce
from appevents.enrichment import DEFAULT_ENRICHERS, Enricher, enrich
from appevents.models import Event
from appevents.pipeline import Pipeline, build_pipeline
from appevents.records import record_attributes
from appevents.settings import AppEventsSettings

__all__ = ["EventStore", "configure"]

_logger = logging.getLogger("appevents")
# Equal to Event.model_dump_json() (default arguments), without its per-call argument handling.
_to_json = Event.__pydantic_serializer__.to_json


class _State:
    """What ``configure()`` set up. One per process, owned by :class:`EventStore`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pipeline: Pipeline | None = None
        self._env_settings: AppEventsSettings | None = None
        self.enrichers: tuple[Enricher, ...] = DEFAULT_ENRICHERS
        self.configured = False
        self.exit_hook_registered = False
        self.sigterm_handled = False
        self.log_once = LogOnce(_logger)
        self.unpublished = 0

    @property
    def settings(self) -> AppEventsSettings:
        """The active pipeline's settings; with none, those of the environment (read once per lifecycle)."""
        if self.pipeline is not None:
            return self.pipeline.settings
        if self._env_settings is None:
            self._env_settings = AppEventsSettings()
        return self._env_settings


@dataclass(frozen=True)
class _Snapshot:
    pipeline: Pipeline | None
    enrichers: tuple[Enricher, ...]
    configured: bool


def configure(
    settings: AppEventsSettings | None = None,
    *,
    exporters: Mapping[str, LogRecordExporter] | None = None,
    processors: Iterable[LogRecordProcessor] = (),
    enrichers: Sequence[Enricher] | None = None,
) -> Pipeline:
    """Build (or rebuild) the event pipeline and make it the one ``EventStore`` publishes to.

    ``settings`` defaults to :class:`AppEventsSettings` read from the environment (``APPEVENTS_*``).
    ``exporters`` adds exporter instances by name to those named in ``settings.exporters``; ``processors`` adds
    OTel log record processors as they are (the test kit uses this); ``enrichers`` replaces the enrichment steps.
    A previous pipeline is flushed and shut down first. Raises :class:`~appevents.ConfigurationError` when a named
    exporter is not installed or cannot be built — ``configure`` is the place where configuration errors surface.
    """
    return EventStore._configure(settings, exporters, processors, enrichers)


def _exit_cleanly_on_sigterm() -> bool:
    """Turn SIGTERM into ``SystemExit`` so interpreter exit (and our exit drain) runs; True once decided.

    Only when nobody handles SIGTERM yet (the default disposition kills the process without running exit hooks,
    losing every queued event); an application's or a framework's own handler is left alone. Signal handlers can
    only be installed from the main thread: from another thread this answers False and a later call retries.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return True

    def _raise_system_exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise_system_exit)
    return True


def _workflow_time_ns(workflow: Any) -> int:
    """``workflow.now()`` in integer nanoseconds (no float rounding)."""
    now = workflow.now()
    return int(calendar.timegm(now.utctimetuple())) * 1_000_000_000 + int(now.microsecond) * 1000


def _register_exit_drain(drain: Callable[[], object]) -> None:
    """Drain at interpreter exit *before* thread pools refuse new work.

    ``concurrent.futures`` marks every executor shut down from a ``threading`` exit hook, which runs before
    ``atexit`` handlers; an exporter that sends through a pool would then fail every queued event. Hooks
    registered with ``threading._register_atexit`` run last-in first-out, so registering ours after
    ``concurrent.futures.thread`` is imported puts the drain first. ``atexit`` stays as the fallback.
    """
    import concurrent.futures.thread  # noqa: F401  # its exit hook must be registered before ours

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(drain)
            return
        except RuntimeError:  # the interpreter is already shutting down
            pass
    atexit.register(drain)


class EventStore:
    """Publish application events: validated, enriched, emitted as OTel log records, delivered by exporters."""

    _state: ClassVar[_State] = _State()

    # -- configuration -------------------------------------------------------------------------------------------
    @classmethod
    def _configure(
        cls,
        settings: AppEventsSettings | None,
        exporters: Mapping[str, LogRecordExporter] | None,
        processors: Iterable[LogRecordProcessor],
        enrichers: Sequence[Enricher] | None,
    ) -> Pipeline:
        state = cls._state
        settings = settings if settings is not None else AppEventsSettings()
        with state.lock:
            pipeline = build_pipeline(settings, exporters, processors)
            previous, state.pipeline = state.pipeline, pipeline
            state.enrichers = tuple(enrichers) if enrichers is not None else DEFAULT_ENRICHERS
            state.configured = True
            state.log_once.reset("no-destinations")
            _runtime.set_max_event_bytes(settings.max_event_bytes)
            if not state.exit_hook_registered:
                _register_exit_drain(cls.shutdown)
                state.exit_hook_registered = True
            if settings.handle_sigterm and not state.sigterm_handled:
                state.sigterm_handled = _exit_cleanly_on_sigterm()
        if previous is not None:
            previous.shutdown()
        return pipeline

    @classmethod
    def _pipeline(cls) -> Pipeline | None:
        state = cls._state
        if state.configured:
            return state.pipeline
        with state.lock:  # concurrent first publishers: one of them configures, the others wait for it
            if not state.configured:
                try:
                    cls._configure(None, None, (), None)
                except Exception as exc:
                    state.configured = True  # configure once; do not retry (and warn) per event
                    state.log_once(  # same cause as "no destinations": the user hears one of the two
                        "no-destinations",
                        logging.WARNING,
                        "appevents: could not configure the event pipeline from the environment (%s); events "
                        "are not published. Call appevents.configure() to see the full error.",
                        exc,
                    )
        return state.pipeline

    @classmethod
    def pipeline(cls) -> Pipeline | None:
        """The active pipeline (configured from the environment on first use), or None."""
        return cls._pipeline()

    # -- publishing ----------------------------------------------------------------------------------------------
    @classmethod
    def enrich_event_metadata(cls, event: Event) -> Event:
        """Fill ``event.metadata`` from the current context (application, tenant, time, topic, Temporal workflow or
        activity, trace). Fields already set are kept. Returns the same instance. Safe outside Temporal."""
        return enrich(event, cls._state.settings, cls._state.enrichers)

    @classmethod
    def publish(cls, event: Event) -> None:
        """Publish ``event`` from synchronous code. Never raises; returns without waiting for delivery.

        Inside workflow code it is deterministic and replay-safe: nothing is emitted while history is replayed.
        """
        try:
            workflow = _runtime.temporal_workflow_module()
            if workflow is None:
                pipeline = cls._pipeline()
            elif _runtime.is_replaying(workflow):
                return
            else:
                # Never configure from workflow code: that reads the environment and opens files inside the
                # sandbox. The plugin (or the interceptor) configures at worker start, outside it.
                pipeline = cls._state.pipeline
                if pipeline is None:
                    cls._count_unpublished(in_workflow=True)
                    return
            if pipeline is None or not pipeline.has_destinations:
                cls._count_unpublished()
                return
            enrich(event, pipeline.settings, cls._state.enrichers)
            timestamp_ns = _workflow_time_ns(workflow) if workflow is not None else time.time_ns()
            attributes = record_attributes(event)
            pipeline.emit(event.event_type, _to_json(event).decode(), attributes, timestamp_ns)
            if pipeline.settings.span_events:
                span = trace.get_current_span()
                if span.is_recording():
                    span.add_event(event.event_type, attributes)
        except Exception as exc:
            cls._state.unpublished += 1
            cls._state.log_once(
                f"publish:{type(exc).__name__}",
                logging.ERROR,
                "appevents: publishing failed with %s: %s (further failures of this kind are counted, not logged)",
                type(exc).__name__,
                exc,
            )

    @classmethod
    async def publish_event(cls, event: Event) -> None:
        """Publish ``event``; the seed's coroutine API. Never raises, does no I/O, does not wait for delivery."""
        cls.publish(event)

    @classmethod
    def _count_unpublished(cls, *, in_workflow: bool = False) -> None:
        cls._state.unpublished += 1
        if in_workflow:
            cls._state.log_once(
                "workflow-unconfigured",
                logging.WARNING,
                "appevents: an event was published from workflow code before the pipeline was configured; it is "
                "skipped. Register appevents.temporal.AppEventsPlugin (or call appevents.configure() before the "
                "worker starts): workflow code never sets the pipeline up itself.",
            )
            return
        cls._state.log_once(
            "no-destinations",
            logging.WARNING,
            "appevents: no event destination is configured (APPEVENTS_EXPORTERS is empty or failed); events are "
            "skipped. Set APPEVENTS_EXPORTERS (e.g. 'local') or call appevents.configure().",
        )

    # -- draining ------------------------------------------------------------------------------------------------
    @classmethod
    def flush_sync(cls, timeout_s: float = 10.0) -> bool:
        """Block until everything published so far is settled by every exporter (delivered, or failed and
        counted in :meth:`stats`); False if ``timeout_s`` ran out first."""
        pipeline = cls._state.pipeline
        return True if pipeline is None else pipeline.flush(timeout_s)

    @classmethod
    async def flush(cls, timeout_s: float = 10.0) -> bool:
        """Wait (without blocking the event loop) until everything published so far is settled (see
        :meth:`flush_sync`).

        Not for workflow code: workflows must not wait on I/O; the worker flushes at shutdown.
        """
        return await asyncio.to_thread(cls.flush_sync, timeout_s)

    @classmethod
    def shutdown(cls, timeout_s: float = 10.0) -> bool:
        """Drain and stop the pipeline within ``timeout_s`` in all; False (and one warning with the counts) if
        events were left undelivered. Runs at interpreter exit too; the next publish configures anew."""
        state = cls._state
        with state.lock:
            pipeline, state.pipeline = state.pipeline, None
            state.configured = False
            state._env_settings = None
            state.log_once = LogOnce(_logger)  # a new lifecycle reports its problems again
            state.unpublished = 0
            _runtime.set_max_event_bytes(None)
        return True if pipeline is None else pipeline.shutdown(timeout_s)

    @classmethod
    def _detach(cls) -> _Snapshot:
        """Take the current configuration out without stopping it (the test kit puts it back with _attach)."""
        state = cls._state
        with state.lock:
            saved = _Snapshot(state.pipeline, state.enrichers, state.configured)
            state.pipeline, state.configured = None, False
            return saved

    @classmethod
    def _attach(cls, saved: _Snapshot) -> None:
        state = cls._state
        with state.lock:
            state.pipeline, state.enrichers, state.configured = saved.pipeline, saved.enrichers, saved.configured
            _runtime.set_max_event_bytes(saved.pipeline.settings.max_event_bytes if saved.pipeline else None)

    @classmethod
    def stats(cls) -> dict[str, DeliveryStats]:
        """Per-exporter delivery counters of the active pipeline."""
        pipeline = cls._state.pipeline
        return {} if pipeline is None else pipeline.stats()

    @classmethod
    def unpublished_count(cls) -> int:
        """Events that never reached a pipeline (no destination configured, or an internal failure) since the
        last :meth:`shutdown`."""
        return cls._state.unpublished
