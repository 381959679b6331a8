"""``EventStore``: the facade compatible with the Atlan application-sdk ``EventStore``. Class methods only.

``publish_event`` enriches the event, encodes it once and hands it to the delivery engine; it never raises and,
unless asked to (``wait=True``), never waits for the disk or the network (fire-and-forget, graceful degradation).
Failures after that point are the engine's to retry, count and report.

Forked processes (gunicorn/uvicorn workers, prefork pools, ``multiprocessing`` and ``ProcessPoolExecutor`` with
the fork start method): the child abandons the parent's pipeline — its threads do not exist in the child, and its
queued events are the parent's to deliver — and builds a fresh one from the same configuration at its first
publish. Exporter instances passed to ``configure(exporters=...)`` are reused as they are; exporters named in the
settings are built anew (fresh connections).
"""

from __future__ import annotations

import asyncio
import atexit
import calendar
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from opentelemetry import trace
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk._logs.export import LogRecordExporter
from pydantic import ValidationError

from appevents import _runtime
from appevents._counting import DeliveryStats, LogOnce
from appevents._encoded import EncodedEvent, Waiter
from appevents._enrichment import DEFAULT_ENRICHERS, Enricher, enrich, enrich_by_default
from appevents._metrics import count_refusal, reset_refusals
from appevents._models import Event, checked_data_json, event_json, field_path, keep_data
from appevents._pipeline import Pipeline
from appevents._records import record_attributes
from appevents._redaction import redactor_of
from appevents._settings import AppEventsSettings

__all__ = ["EventStore", "configuration_set_aside", "configure"]

_logger = logging.getLogger("appevents")
#: Enrichment adds metadata after the size check made at construction; the check made again at publish (for
#: events whose ``data`` was changed in place since) allows for it.
_ENRICHMENT_ALLOWANCE = 4096
#: Pipelines abandoned by a forked child: never shut down there (their threads and connections belong to the
#: parent), and kept referenced so no finaliser touches the parent's connections from the child.
_ABANDONED_AFTER_FORK: list[Pipeline] = []


@dataclass(frozen=True)
class _Recipe:
    """What ``configure()`` was given, to build the same pipeline again (in a forked child)."""

    settings: AppEventsSettings
    exporters: Mapping[str, LogRecordExporter | object] | None
    processors: tuple[LogRecordProcessor, ...]


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
        self.recipe: _Recipe | None = None
        #: Set by the exit drain: a publish after it (an atexit handler, a daemon thread) returns False and is
        #: counted (``interpreter_exit``) instead of going to a pipeline that nothing would drain.
        self.exiting = False

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
    """Install :func:`_on_sigterm` where nobody handles SIGTERM yet (the import usually did: see
    :func:`_handle_sigterm_from_import`); True once decided. An application's or a framework's own handler is left
    alone. Signal handlers can only be installed from the main thread: from another thread this answers False and
    a later call retries."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
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
    """Publish application events: validated, enriched, encoded once and delivered by exporters."""

    _state: ClassVar[_State] = _State()

    # -- configuration -------------------------------------------------------------------------------------------
    @classmethod
    def _configure(
        cls,
        settings: AppEventsSettings | None,
        exporters: Mapping[str, LogRecordExporter | object] | None,
        processors: Iterable[LogRecordProcessor],
        enrichers: Sequence[Enricher] | None,
    ) -> Pipeline:
        state = cls._state
        settings = settings if settings is not None else AppEventsSettings()
        recipe = _Recipe(settings, exporters, tuple(processors))
        # Built outside the lock: a fork (which takes it, see _before_fork) never waits for exporters or the disk.
        pipeline = Pipeline(settings, exporters, recipe.processors, on_unrouted=cls._count_unrouted)
        with state.lock:
            previous, state.pipeline = state.pipeline, pipeline
            state.recipe = recipe
            state.enrichers = tuple(enrichers) if enrichers is not None else DEFAULT_ENRICHERS
            state.configured = True
            state.log_once.reset("no-destinations")
            cls._arm_process_hooks(settings)
        if previous is not None:
            previous.shutdown()
        return pipeline

    @classmethod
    def _arm_process_hooks(cls, settings: AppEventsSettings) -> None:
        state = cls._state
        _runtime.set_max_event_bytes(settings.max_event_bytes)
        if not state.exit_hook_registered:
            _register_exit_drain(cls._exit_drain)
            state.exit_hook_registered = True
        if settings.handle_sigterm and not state.sigterm_handled:
            state.sigterm_handled = _exit_cleanly_on_sigterm()

    @classmethod
    def _exit_drain(cls) -> None:
        cls._state.exiting = True
        cls.shutdown()

    @classmethod
    def _pipeline(cls) -> Pipeline | None:
        state = cls._state
        if state.configured:
            return state.pipeline
        with state.lock:  # concurrent first publishers: one of them starts the pipeline, the others wait for it
            if not state.configured:
                recipe = state.recipe
                try:
                    # Reading the settings is the only work done here; exporters are built in the background.
                    settings = recipe.settings if recipe is not None else AppEventsSettings()
                    state.pipeline = Pipeline(
                        settings,
                        recipe.exporters if recipe is not None else None,
                        recipe.processors if recipe is not None else (),
                        background=True,
                        on_unrouted=cls._count_unrouted,
                    )
                    cls._arm_process_hooks(settings)
                except Exception as exc:
                    state.log_once(  # same cause as "no destinations": the user hears one of the two
                        "no-destinations",
                        logging.WARNING,
                        "appevents: could not configure the event pipeline from the environment (%s); events "
                        "are not published. Call appevents.configure() to see the full error.",
                        exc,
                    )
                # Once per lifecycle, after the pipeline is in place: never retried (and warned about) per event.
                state.configured = True
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
    def publish(cls, event: Event, *, wait: bool = False, timeout_s: float = 10.0) -> bool:
        """Publish ``event`` from synchronous code. Never raises.

        By default returns at once (True: handed over; False: refused — see :meth:`unpublished_count`).
        ``wait=True`` blocks until the event is durable — committed to the spool in durable mode — or, without a
        spool, settled by every exporter; True if it was made durable (or delivered everywhere) within
        ``timeout_s``. Inside workflow code ``wait`` is ignored (workflows must not block) and nothing is emitted
        while history is replayed.
        """
        waiter = cls._submit(event, wait)
        if isinstance(waiter, bool):
            return waiter
        return waiter.wait(timeout_s)

    @classmethod
    async def publish_event(cls, event: Event, *, wait: bool = False, timeout_s: float = 10.0) -> bool:
        """Publish ``event``: the coroutine API of the application-sdk ``EventStore``. Never raises, does no I/O.

        ``wait=True`` waits (without blocking the event loop) until the event is durable or delivered, as
        :meth:`publish` describes.
        """
        waiter = cls._submit(event, wait)
        if isinstance(waiter, bool):
            return waiter
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def wake(ok: bool) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve, done, ok)

        waiter.on_release(wake)
        try:
            return await asyncio.wait_for(done, timeout_s)
        except TimeoutError:
            return False

    @classmethod
    def _submit(cls, event: Event, wait: bool) -> bool | Waiter:
        """Enrich, encode once, hand over. Returns the waiter when one was asked for, else whether it was taken."""
        try:
            if cls._state.exiting:
                cls._refuse(
                    "interpreter_exit",
                    "appevents: an event was published after the exit drain (from an atexit handler or a thread "
                    "still running at exit); it is not delivered: publish returned False. Publish before exit, or "
                    "call EventStore.shutdown() yourself after the last publish; further ones are counted",
                )
                return False
            workflow = _runtime.temporal_workflow_module()
            if workflow is None:
                pipeline = cls._pipeline()
            elif _runtime.is_replaying(workflow):
                return True
            else:
                # Never configure from workflow code: that reads the environment and opens files inside the
                # sandbox. The plugin (or the interceptor) configures at worker start, outside it.
                pipeline = cls._state.pipeline
                if pipeline is None:
                    host = _host_event_store(workflow)
                    if host is not None:  # the sandbox's own copy of appevents: the process's copy publishes
                        return host._submit_from_sandbox(event, wait)
                    cls._count_unpublished(in_workflow=True)
                    return False
            if pipeline is None or not pipeline.has_destinations:
                cls._count_unpublished()
                return False
            settings = pipeline.settings
            enrichers = cls._state.enrichers
            if enrichers is DEFAULT_ENRICHERS:
                span = trace.get_current_span()
                enrich_by_default(event, settings, workflow, span)
            else:
                enrich(event, settings, enrichers)
                span = trace.get_current_span()
            try:
                data_json = checked_data_json(event)  # the bytes kept at construction, unless changed in place
            except ValidationError as exc:
                cls._refuse_invalid(exc)
                return False
            redactor = redactor_of(settings)  # made once per settings object, i.e. per pipeline; None: off
            if redactor is not None:
                data = event.data
                redacted = redactor(data)  # the same object when nothing matches
                if redacted is not data:
                    # Replaced on the instance, not only in the encoded copy: after this line nothing can read the
                    # values from the event — the body below, record_attributes (which never carry data, so the
                    # span event cannot either), an error message, the caller's own log of the event after
                    # publish. The caller's dict is not changed (redact copies on write). Written to __dict__
                    # like enrichment: the redacted data is JSON, and its size is checked below.
                    data_json = keep_data(event, redacted)
            body = event_json(event, data_json)
            if len(body) > settings.max_event_bytes + _ENRICHMENT_ALLOWANCE:
                cls._refuse(
                    "too_large",
                    "appevents: an event of %d bytes was refused at publish (APPEVENTS_MAX_EVENT_BYTES is %d; its "
                    "data grew after it was built); further refusals are counted, not logged",
                    len(body),
                    settings.max_event_bytes,
                )
                return False
            context = span.get_span_context()
            attributes = record_attributes(event)
            waiter = Waiter() if wait and workflow is None else None
            taken = pipeline.submit(
                EncodedEvent(
                    event.event_id,
                    event.event_type,
                    body,
                    attributes,
                    _workflow_time_ns(workflow) if workflow is not None else time.time_ns(),
                    context.trace_id,
                    context.span_id,
                    context.trace_flags,
                    waiter=waiter,
                )
            )
            if settings.span_events and span.is_recording():
                span.add_event(event.event_type, attributes)
            # Refused at the door (a full or closed queue): counted there, in stats(); the caller hears False.
            return taken if waiter is None else waiter
        except Exception as exc:
            cls._counted_refusal(f"error:{type(exc).__name__}")
            cls._state.log_once.failure("publish", exc, "publishing an event", "it is not published")
            return False

    @classmethod
    def _submit_from_sandbox(cls, event: Any, wait: bool) -> bool | Waiter:
        """Publish an event built by the sandbox's copy of appevents (a worker without the plugin re-imports
        appevents inside the workflow sandbox, with its own, unconfigured ``EventStore``): as this process's
        ``Event`` — the same fields, validated again — through this copy, which runs on the real modules the way
        the plugin's pass-through makes it run."""
        try:
            # warnings=False: pydantic's serialization warnings about data changed in place quote the value.
            own = Event.model_validate(event.model_dump(warnings=False))
        except ValidationError as exc:  # valid when built: changed in place since, as _submit's check catches
            cls._refuse_invalid(exc, within=())
            return False
        except Exception as exc:
            cls._counted_refusal(f"error:{type(exc).__name__}")
            cls._state.log_once.failure("sandbox", exc, "taking an event from the workflow sandbox", "not published")
            return False
        return cls._submit(own, wait)

    @classmethod
    def _counted_refusal(cls, reason: str) -> None:
        """One event refused at publish: ``unpublished_count()`` and ``appevents.events.refused``."""
        cls._state.unpublished += 1
        count_refusal(reason)

    @classmethod
    def _refuse_invalid(cls, error: ValidationError, within: tuple[str, ...] = ("data",)) -> None:
        """Refuse an event that was valid when built and is not now; ``within``: where ``error``'s locations are
        (the data alone, or the whole event)."""
        first = error.errors(include_url=False)[0]
        cls._refuse(
            "invalid_data",
            "appevents: an event whose data was changed in place after it was built into something that is not "
            "JSON was refused at publish (%s: %s); further refusals are counted, not logged",
            field_path((*within, *first["loc"])),
            first["msg"],
        )

    @classmethod
    def _refuse(cls, reason: str, message: str, *args: object) -> None:
        cls._counted_refusal(reason)
        cls._state.log_once(reason, logging.ERROR, message, *args)

    @classmethod
    def _count_unrouted(cls, count: int) -> None:
        for _ in range(count):
            cls._count_unpublished()

    @classmethod
    def _count_unpublished(cls, *, in_workflow: bool = False) -> None:
        cls._counted_refusal("workflow_unconfigured" if in_workflow else "no_destination")
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
            "appevents: no event destination is configured (APPEVENTS_EXPORTERS=none, or no exporter could be "
            "built); events are skipped. Set APPEVENTS_EXPORTERS (e.g. 'local') or call appevents.configure().",
        )

    # -- draining ------------------------------------------------------------------------------------------------
    @classmethod
    def flush_sync(cls, timeout_s: float = 10.0) -> bool:
        """Block until everything published so far is settled by every exporter (delivered, or failed/dropped and
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
        """Drain and stop the pipeline within ``timeout_s`` in all: every thread it started is stopped before this
        returns. One warning says exactly what was not delivered, per exporter and reason (in durable mode, what
        is left stays in the spool for the next start). False if any event was lost. Runs at interpreter exit
        too (and on SIGTERM, see the README); the next publish configures anew."""
        state = cls._state
        with state.lock:
            pipeline, state.pipeline = state.pipeline, None
            state.configured = False
            state.recipe = None
            state._env_settings = None
            state.log_once = LogOnce(_logger)  # a new lifecycle reports its problems again
            state.unpublished = 0
            reset_refusals()
            _runtime.set_max_event_bytes(None)
        return True if pipeline is None else pipeline.shutdown(timeout_s)

    @classmethod
    def _after_fork_in_child(cls) -> None:
        """In a forked child: abandon the parent's pipeline (not ours to drain), build our own at first publish."""
        state = cls._state
        state.lock = threading.RLock()  # the parent's may be held by a thread that does not exist here
        if state.pipeline is not None:
            _ABANDONED_AFTER_FORK.append(state.pipeline)
            state.pipeline = None
            state.configured = False
        state.log_once = LogOnce(_logger)
        state.unpublished = 0
        reset_refusals()  # as unpublished_count(): the child's own
        state.exiting = False

    @classmethod
    def stats(cls) -> dict[str, DeliveryStats]:
        """Counters per exporter (and of the ``spool`` stage in durable mode) of the active pipeline; for each,
        ``accepted = delivered + failed + dropped + pending``."""
        pipeline = cls._state.pipeline
        return {} if pipeline is None else pipeline.stats()

    @classmethod
    def unpublished_count(cls) -> int:
        """Events that never reached a pipeline (no destination configured, refused at publish, or an internal
        failure) since the last :meth:`shutdown`."""
        return cls._state.unpublished


@contextlib.contextmanager
def configuration_set_aside() -> Iterator[None]:
    """Take the active configuration out without stopping it, and put it back afterwards (the test kit's
    ``captured_events``); whatever was configured meanwhile must be shut down inside the block."""
    state = EventStore._state
    with state.lock:
        saved = _Snapshot(state.pipeline, state.enrichers, state.configured)
        state.pipeline, state.configured = None, False
    try:
        yield
    finally:
        with state.lock:
            state.pipeline, state.enrichers, state.configured = saved.pipeline, saved.enrichers, saved.configured
            _runtime.set_max_event_bytes(saved.pipeline.settings.max_event_bytes if saved.pipeline else None)


def _host_event_store(workflow: Any) -> type[EventStore] | None:
    """Inside the workflow sandbox, when this module is the sandbox's own copy (appevents not passed through, as
    on a worker without the plugin): the process's ``EventStore``, imported through temporalio's own
    ``imports_passed_through``; None otherwise (this is the process's copy, or it cannot be told)."""
    unsafe = workflow.unsafe
    try:
        if not unsafe.in_sandbox():
            return None
        with unsafe.imports_passed_through():
            # A module the sandbox has not imported yet, so temporalio passes the process's own through.
            host: Any = __import__("appevents._host", fromlist=["EventStore"])
    except Exception:  # an older temporalio, a restricted import: refused and counted here instead
        return None
    store = getattr(host, "EventStore", None)
    return None if store is None or store is EventStore else store


def _resolve(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)


#: How long a fork waits for a pipeline still being built in the background (see _before_fork).
_FORK_WAITS_FOR_BUILD_S = 10.0


def _before_fork() -> None:
    # A pipeline built in the background imports and constructs its exporters on its own thread; forked in the
    # middle of that, the child inherits a half-imported module and an import lock held by a thread it does not
    # have (its own build then fails or hangs). So a fork waits for the build first (bounded).
    pipeline = EventStore._state.pipeline
    if pipeline is not None:
        pipeline.wait_built(_FORK_WAITS_FOR_BUILD_S)
    EventStore._state.lock.acquire()  # no fork while a pipeline is being swapped


def _after_fork_in_parent() -> None:
    EventStore._state.lock.release()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=EventStore._after_fork_in_child
)


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM, installed at import: exit through ``SystemExit`` (so the exit drain delivers what is queued) when a
    pipeline is live and ``APPEVENTS_HANDLE_SIGTERM`` is on; otherwise do what SIGTERM does without a handler."""
    state = EventStore._state
    pipeline = state.pipeline
    if pipeline is not None and pipeline.settings.handle_sigterm and not state.exiting:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _handle_sigterm_from_import() -> None:
    """Signal handlers can only be installed from the main thread, and the first publish is often elsewhere (an
    activity on a thread pool, a worker's thread). The import usually is on the main thread: install there the
    handler that decides when the signal comes (see :func:`_on_sigterm`)."""
    with contextlib.suppress(ValueError, OSError, RuntimeError):  # not allowed here: configure() tries again
        _exit_cleanly_on_sigterm()  # off the main thread (the Temporal sandbox re-importing us): nothing


_handle_sigterm_from_import()
