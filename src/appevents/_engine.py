"""The delivery engine: from the publishing caller to each exporter with one hand-off, exact counts, no loss
that goes uncounted.

Without a spool, the caller appends the :class:`~appevents.exporting.EncodedEvent` to each exporter's bounded
queue (:meth:`Channel.offer`: a ``deque`` append) and returns; each :class:`Channel` has one thread that takes
batches and calls its exporter. With a spool, the caller appends to the spool writer's inbox instead
(:class:`~appevents._spool_writer.SpoolWriter`);
the writer group-commits to SQLite (one transaction every ``spool_commit_interval_ms``) and each channel reads
the spool through its own cursor, so exporters progress independently and an event leaves the spool only when
every exporter has settled it.

Per channel and at every moment: ``accepted = delivered + failed + dropped + pending`` (:class:`DeliveryStats`).
A batch is settled per event (:class:`~appevents.exporting.ExportOutcome`), so one bad event never fails or
delays the events around it. What an exporter could not deliver for now (``retry``) is counted as failed
without a spool, and kept and offered again after a backoff with one.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from appevents._counting import DeliveryStats, EpisodeWarning, LogOnce, drain_reasons
from appevents._encoded import EncodedEvent, EventExporter, ExportOutcome
from appevents._metrics import StageMetrics, instruments_for
from appevents._spool import Orphan, SpoolReader
from appevents._threads import start_background_thread

__all__ = ["SPOOL_STAGE", "Channel", "Sink", "shutdown_exporter", "sink_for"]

#: The name of the spool writer's stage in ``stats()`` and the self-metrics (durable mode).
SPOOL_STAGE = "spool"

_logger = logging.getLogger("appevents")

Sink = Callable[[Sequence[EncodedEvent]], ExportOutcome]

#: Backoff between offers of events a destination could not take (spool mode): from the first value, doubling,
#: up to the second, half of it random so that many processes do not come back at once.
_RETRY_BACKOFF_S = (0.2, 5.0)


def _readable(event: EncodedEvent, resource: Resource, scope: InstrumentationScope) -> ReadableLogRecord:
    return ReadableLogRecord(log_record=log_record_of(event), resource=resource, instrumentation_scope=scope)


def log_record_of(event: EncodedEvent, extra_attributes: Mapping[str, str] | None = None) -> LogRecord:
    """The OTel log record of ``event`` (``event_name`` = its type, body = its JSON, the publisher's trace context),
    with ``extra_attributes`` added to its own."""
    context = None
    if event.trace_id:
        span_context = SpanContext(event.trace_id, event.span_id, False, TraceFlags(event.trace_flags))
        context = set_span_in_context(NonRecordingSpan(span_context))
    return LogRecord(
        timestamp=event.timestamp_ns,
        observed_timestamp=time.time_ns(),
        context=context,
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        body=event.body.decode(),
        attributes={**event.attributes, **extra_attributes} if extra_attributes else event.attributes,
        event_name=event.event_type,
    )


def sink_for(exporter: object, resource: Resource, scope: InstrumentationScope) -> Sink:
    """How the engine calls ``exporter``: the encoded path for an :class:`EventExporter`, proper OTel log records
    (built on the exporter's thread) for a ``LogRecordExporter``, ``on_emit`` for a ``LogRecordProcessor``."""
    if isinstance(exporter, EventExporter):
        return exporter.export_events
    if isinstance(exporter, LogRecordExporter):

        def export_records(batch: Sequence[EncodedEvent]) -> ExportOutcome:
            result = exporter.export([_readable(event, resource, scope) for event in batch])
            if result is LogRecordExportResult.SUCCESS:
                return ExportOutcome()
            # An exporter that can tell a refusal for good (the otlp exporter: a refused credential) says so.
            refusal = getattr(exporter, "refusal", None)
            reason = refusal() if callable(refusal) else None
            if reason:
                return ExportOutcome(failed=[(event, reason) for event in batch])
            # OTel's interface answers per batch, without saying why: the batch is returned as not deliverable now
            # (kept in the spool in durable mode, counted failed without one).
            return ExportOutcome(retry=list(batch), retry_reason=f"{type(exporter).__name__} reported FAILURE")

        return export_records
    if isinstance(exporter, LogRecordProcessor):

        def emit(batch: Sequence[EncodedEvent]) -> ExportOutcome:
            for event in batch:
                record = ReadWriteLogRecord(
                    log_record=log_record_of(event), resource=resource, instrumentation_scope=scope
                )
                exporter.on_emit(record)
            return ExportOutcome()

        return emit
    raise TypeError(f"{type(exporter).__name__} is neither an EventExporter, a LogRecordExporter nor a processor")


def shutdown_exporter(exporter: object, name: str = "") -> None:
    """Call ``exporter.shutdown()`` if it has one; an exception is logged, never raised (shutdown goes on)."""
    shutdown = getattr(exporter, "shutdown", None)
    if shutdown is None:
        return
    try:
        shutdown()
    except Exception as exc:
        _logger.error("appevents: shutting exporter %s down failed: %r", name or type(exporter).__name__, exc)


class _Wake:
    """The wake-up of a channel's thread, given by publishers (and signal handlers) without a lock: a
    ``SimpleQueue.put`` is reentrant — safe in a signal handler that interrupted this very call — where a
    ``threading.Event`` takes a non-reentrant lock. At most one wake-up token is pending at a time, so a busy
    channel costs its publishers one attribute read."""

    __slots__ = ("_pending", "_tokens")

    def __init__(self) -> None:
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._pending = False

    def is_set(self) -> bool:
        return self._pending

    def set(self) -> None:
        if not self._pending:
            self._pending = True
            self._tokens.put(None)

    def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(queue.Empty):
            self._tokens.get(timeout=timeout_s)

    def clear(self) -> None:
        # Tokens first, then the flag: a set() in between leaves a token behind (a spurious wake-up, harmless);
        # the other order could eat its token and leave the flag set — a lost wake-up.
        with contextlib.suppress(queue.Empty):
            while True:
                self._tokens.get_nowait()
        self._pending = False


@dataclass
class _Source:
    """Where a spool-mode channel reads: its own pipeline's rows, or an orphan's being replayed."""

    owner: str
    cursor: int
    orphan: bool = False
    finished: bool = False
    counted: int = 0  # an orphan's rows are counted (as committed) when first read: up to this seq


@dataclass
class _Counts:
    """A channel's counters; ``pending`` is derived, so ``accepted = delivered + failed + dropped + pending`` holds
    by construction and every term is counted per event where it happens."""

    taken: int = 0  # memory mode: taken out of the queue by the exporter thread
    committed: int = 0  # spool mode: committed for this channel, or read back from an orphan
    delivered: int = 0
    failed: int = 0
    dropped_at_door: int = 0  # memory mode: refused by a full or closed queue
    dropped: int = 0  # settled as dropped (by the exporter, or left in memory at shutdown)
    failed_reasons: Counter[str] = field(default_factory=Counter)
    dropped_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def settled(self) -> int:
        return self.delivered + self.failed + self.dropped


class Channel:
    """One exporter's queue (or spool cursor), thread and counters."""

    def __init__(
        self,
        name: str,
        exporter: object,
        sink: Sink,
        *,
        max_queue_size: int,
        max_batch: int,
        schedule_delay_s: float,
        spool_owner: str | None = None,
        spool_reader: Callable[[], SpoolReader] | None = None,
        metrics: StageMetrics | None = None,
    ) -> None:
        self.name = name
        #: Self-metrics, recorded *before* the counters they mirror change: whoever sees a count (a flush, stats())
        #: finds it in the metrics too.
        self._metrics = metrics if metrics is not None else instruments_for().stage(name)
        self.exporter = exporter
        self._sink = sink
        self._accepts: Callable[[EncodedEvent], bool] | None = getattr(exporter, "accepts", None)
        self._max_queue = max_queue_size
        self._max_batch = max_batch
        self._delay = schedule_delay_s
        self._queue: deque[EncodedEvent] = deque()
        #: Reasons of events dropped at the door, appended by publishers without a lock (see _drop_at_door).
        self._door_drops: deque[str] = deque()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._counts = _Counts()
        self._wake = _Wake()
        self._stop = threading.Event()  # stop now: abandon what is not settled
        self._closing = False  # stop once everything is settled
        self._refusing = False  # new events are dropped at the door (shutdown)
        self._log_once = LogOnce(_logger)
        self._full_warning = EpisodeWarning()
        self._closed_warning = EpisodeWarning()  # its own: a recent "full" must not silence "closed"
        self._spool_reader_factory = spool_reader
        self._sources: list[_Source] = [_Source(spool_owner, 0)] if spool_owner is not None else []
        self._turn = 0  # which source _take reads first next time
        self._unspooled_open = 0  # durable mode: events taken in memory (the spool failing), not settled yet
        self._reader: SpoolReader | None = None
        self._thread = threading.Thread(target=self._run, name=f"appevents-{name}", daemon=True)

    def start(self) -> Channel:
        start_background_thread(self._thread)
        return self

    @property
    def spooled(self) -> bool:
        return self._spool_reader_factory is not None

    def wants(self, event: EncodedEvent) -> bool:
        return True if self._accepts is None else bool(self._accepts(event))

    # -- publishing caller (memory mode) -------------------------------------------------------------------------
    def room(self) -> int:
        """How many more events :meth:`offer` queues now (0 once closing)."""
        return 0 if self._refusing else max(0, self._max_queue - len(self._queue))

    def offer(self, event: EncodedEvent) -> bool:
        """Queue ``event`` (a deque append); True if queued. A full or closed queue drops it, counted, one warning
        an episode. Takes no lock (see :meth:`_drop_at_door`): a signal handler may publish on a thread that was
        interrupted in here."""
        if self._refusing or len(self._queue) >= self._max_queue:
            self._drop_at_door(event, "shutdown" if self._refusing else "queue_full")
            return False
        self._queue.append(event)
        if not self._wake.is_set():  # an idle channel sends at once; a busy one takes what accumulated meanwhile
            self._wake.set()
        return True

    def offer_unspooled(self, event: EncodedEvent) -> bool:
        """Durable mode, the spool failing (disk full, I/O error): take ``event`` in memory, best effort — sent
        like memory mode's events (before the spool's rows), counted by this channel like the committed ones, and
        dropped (``queue_full``) only at the memory bound. Called by the spool writer's thread."""
        if self._refusing or len(self._queue) >= self._max_queue:
            self._drop_at_door(event, "shutdown" if self._refusing else "queue_full")
            return False
        with self._lock:
            self._counts.committed += 1
            self._unspooled_open += 1
            self._queue.append(event)
        if not self._wake.is_set():
            self._wake.set()
        return True

    def _drop_at_door(self, event: EncodedEvent, reason: str) -> None:
        # No lock and no metrics call here: the caller may be a signal handler that interrupted this very thread
        # inside a lock (a non-reentrant lock would deadlock it), or workflow code (where a metrics instrument's
        # lock is a restricted call). The reason is appended to a deque (atomic); the channel thread and stats()
        # count it (_record_door_drops_locked).
        self._door_drops.append(reason)
        if event.waiter is not None:
            event.waiter.release(False, reason)
        if reason == "shutdown":
            if self._closed_warning.starts():
                _logger.warning(
                    "appevents: the %s channel is shut down; events that reach it from now on (published while "
                    "EventStore.shutdown() ran, or during interpreter exit) are dropped and counted",
                    self.name,
                )
        elif self._full_warning.starts():
            _logger.warning(
                "appevents: the %s queue is full (%d events); new events are dropped and counted until it drains "
                "(raise APPEVENTS_MAX_QUEUE_SIZE, set APPEVENTS_SPOOL_PATH, or check the destination; "
                "said again at most once a minute)",
                self.name,
                self._max_queue,
            )
        if not self._wake.is_set():
            self._wake.set()

    def _record_door_drops_locked(self) -> None:
        """Move the drops at the door into the counters and the metrics (the metrics first, as everywhere)."""
        reasons = drain_reasons(self._door_drops)
        if reasons:
            self._metrics.dropped(reasons)
            self._counts.dropped_at_door += sum(reasons.values())
            self._counts.dropped_reasons.update(reasons)

    # -- spool writer (spool mode) -------------------------------------------------------------------------------
    def committed(self, count: int) -> None:
        """``count`` events for this channel are being committed to the spool (negative: the commit failed)."""
        with self._lock:
            self._counts.committed += count

    def wake(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    def adopt(self, orphan: Orphan) -> None:
        """Replay an orphan's rows from its cursor for this exporter (0 if it had none), before our own."""
        with self._lock:
            source = _Source(orphan.owner, orphan.cursors.get(self.name, 0), orphan=True)
            self._sources.insert(len(self._sources) - 1, source)
        self._wake.set()

    def cursors(self) -> tuple[dict[str, int], list[str]]:
        """(owner → seq settled so far, orphans replayed to the end) for the writer's checkpoint."""
        with self._lock:
            return {s.owner: s.cursor for s in self._sources}, [s.owner for s in self._sources if s.finished]

    def forget(self, owners: Sequence[str]) -> None:
        with self._lock:
            self._sources = [s for s in self._sources if s.owner not in owners]

    # -- exporter thread -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        reader = self._reader = self._spool_reader_factory() if self._spool_reader_factory is not None else None
        try:
            while not self._stop.is_set():
                self._wake.wait(self._delay)
                self._wake.clear()
                while not self._stop.is_set():
                    batch, source, last_seq = self._take(reader)
                    if source is None and not batch:
                        break
                    self._deliver(batch, source, last_seq)
                if self._closing and self._idle():
                    return
        except Exception as exc:  # a bug here must be seen, and must not hang flush/shutdown
            self._log_once.failure("engine", exc, f"the {self.name} delivery thread", "its events are not delivered")
        finally:
            if reader is not None:
                reader.close()
            with self._progress:
                self._progress.notify_all()

    def _idle(self) -> bool:
        with self._lock:
            return self._settled_target_locked() <= self._counts.settled

    def _take(self, reader: SpoolReader | None) -> tuple[list[EncodedEvent], _Source | None, int]:
        if reader is None or self._queue:  # memory mode; in durable mode, events the spool could not take
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
                if reader is None:
                    self._counts.taken += len(batch)
                if not self._queue:
                    self._full_warning.ended()
            return batch, None, 0
        with self._lock:
            sources = [s for s in self._sources if not s.finished]
        # Fair between sources: a replay of an orphan's rows takes turns with this pipeline's own (live) rows, so a
        # fresh event waits for one batch of the replay, not for the whole of it.
        start = self._turn % len(sources) if sources else 0
        for index in range(start, start + len(sources)):
            source = sources[index % len(sources)]
            try:
                rows = reader.read(source.owner, source.cursor, self._max_batch)
            except Exception as exc:  # locked past the busy timeout, I/O error: try again later, never give up
                self._log_once.failure("read", exc, f"{self.name}: reading the spool", "retrying")
                self._stop.wait(1.0)
                return [], None, 0
            if not rows:
                if source.orphan:
                    with self._lock:
                        source.finished = True  # an orphan appends no more: replayed to the end
                continue
            self._turn = index + 1
            wanted = rows if self._accepts is None else [row for row in rows if self.wants(row)]
            if source.orphan:  # counted once, however often a row is read again (see _back_off)
                with self._lock:
                    self._counts.committed += sum(1 for row in wanted if row.seq > source.counted)
                    source.counted = max(source.counted, rows[-1].seq)
            return wanted, source, rows[-1].seq
        return [], None, 0

    def _deliver(self, batch: list[EncodedEvent], source: _Source | None, last_seq: int) -> None:
        attempt = 0
        while batch:
            if attempt:
                self._metrics.retried(len(batch))
            outcome = self._call(batch)
            if outcome.retry and source is None and self._stop.is_set():  # cut off by shutdown: lost, and said so
                outcome.dropped.extend((event, "shutdown") for event in outcome.retry)
                outcome.retry = []
            if outcome.retry and source is None:  # memory mode: the exporter has retried within its window already
                self._log_once(
                    "gave-up",
                    logging.ERROR,
                    "appevents: %s could not deliver %d event(s) (%s); counted as failed. Set APPEVENTS_SPOOL_PATH "
                    "to keep such events until the destination is back (further occurrences are counted, not "
                    "logged).",
                    self.name,
                    len(outcome.retry),
                    outcome.retry_reason or "destination unavailable",
                )
                outcome.failed.extend((event, "unavailable") for event in outcome.retry)
                outcome.retry = []
            self._settle(batch, outcome, source)
            if source is not None:
                # Per event: the cursor passes everything settled before the first event kept for a retry, and is
                # saved at once, so a crash re-sends at most the batch in flight.
                self._advance(source, min(e.seq for e in outcome.retry) - 1 if outcome.retry else last_seq)
            batch = outcome.retry
            if not batch:
                break
            if attempt == 0:
                self._log_once(
                    "kept",
                    logging.WARNING,
                    "appevents: %s could not deliver %d event(s) for now (%s); they stay in the spool and are "
                    "offered again with backoff until the destination takes them",
                    self.name,
                    len(batch),
                    outcome.retry_reason or "destination unavailable",
                )
            delay = min(_RETRY_BACKOFF_S[1], _RETRY_BACKOFF_S[0] * 2**attempt)
            attempt += 1
            if not self._back_off(delay / 2 + random.uniform(0, delay / 2)):
                return  # what is not settled stays in the spool, the cursor before it: read again later
        if source is not None:
            self._advance(source, last_seq)
            if attempt:
                self._log_once.reset("kept")

    def _back_off(self, delay_s: float) -> bool:
        """Wait ``delay_s`` before offering a spool batch again; False if it should not be offered now: stopped,
        or events the spool could not take wait in memory (they are sent first, best effort, not held back by a
        destination's outage)."""
        deadline = time.monotonic() + delay_s
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(remaining, 0.05)) or self._queue:
                return False
        return not self._stop.is_set()

    def _advance(self, source: _Source, seq: int) -> None:
        """Move ``source``'s cursor to ``seq`` and save it in the spool (the writer's checkpoint purges rows)."""
        with self._progress:
            if seq <= source.cursor:
                return
            source.cursor = seq
            self._progress.notify_all()
        if self._reader is not None:
            try:
                self._reader.save_cursor(source.owner, self.name, seq)
            except Exception as exc:  # locked, disk full: the writer's checkpoint saves it later
                self._log_once.failure("cursor", exc, f"{self.name}: saving its spool cursor", "saved later")

    def _call(self, batch: list[EncodedEvent]) -> ExportOutcome:
        start = time.perf_counter()
        try:
            return self._sink(batch)
        except Exception as exc:  # an exporter bug costs its batch, never the thread
            self._log_once.failure(
                "raise", exc, f"exporter {self.name}", f"its batch of {len(batch)} is counted as failed"
            )
            return ExportOutcome(failed=[(event, f"exporter_error:{type(exc).__name__}") for event in batch])
        finally:
            self._metrics.export_duration(time.perf_counter() - start)

    def _settle(self, batch: list[EncodedEvent], outcome: ExportOutcome, source: _Source | None = None) -> None:
        """Count ``outcome`` for ``batch``: the events it does not list were delivered; ``retry`` stays pending."""
        failed, dropped = outcome.failed, outcome.dropped
        delivered = len(batch) - len(failed) - len(dropped) - len(outcome.retry)
        failed_reasons = Counter(reason for _, reason in failed)
        dropped_reasons = Counter(reason for _, reason in dropped)
        self._metrics.exported(delivered)
        self._metrics.failed(failed_reasons)
        self._metrics.dropped(dropped_reasons)
        with self._progress:
            self._record_door_drops_locked()
            if self.spooled and source is None:
                self._unspooled_open -= len(batch) - len(outcome.retry)
            counts = self._counts
            counts.delivered += delivered
            counts.failed += len(failed)
            counts.dropped += len(dropped)
            counts.failed_reasons.update(failed_reasons)
            counts.dropped_reasons.update(dropped_reasons)
            self._progress.notify_all()
        if any(event.waiter is not None for event in batch):
            retried = {id(event) for event in outcome.retry}
            refused = {id(event): reason for event, reason in (*failed, *dropped)}
            for event in batch:
                if event.waiter is not None and id(event) not in retried:
                    reason = refused.get(id(event))
                    event.waiter.release(reason is None, reason or "")

    # -- control -------------------------------------------------------------------------------------------------
    def _settled_target_locked(self) -> int:
        """How many events this channel must settle to be done with everything accepted so far."""
        c = self._counts
        return c.committed if self.spooled else c.taken + len(self._queue)

    def flush(self, deadline: float, seq: int = 0) -> bool:
        """Wait until every event accepted before this call is settled — in spool mode, until this channel's cursor
        has passed ``seq`` (the last one committed) — False if ``deadline`` passed first."""
        if self.spooled:

            def done() -> bool:  # called with the lock held; in-memory events (the spool failing) settled too
                caught_up = not self._sources or self._sources[-1].cursor >= seq
                return caught_up and not self._unspooled_open
        else:
            with self._progress:
                target = self._settled_target_locked()

            def done() -> bool:
                return self._counts.settled >= target

        self._wake.set()
        with self._progress:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._progress.wait(min(remaining, 0.05))
                self._wake.set()
        return True

    def refuse_new(self) -> None:
        """Drop what is offered from now on (counted, reason ``shutdown``); what is queued is still delivered."""
        self._refusing = True

    def begin_close(self) -> None:
        """Refuse new events and stop once everything accepted is settled."""
        self._refusing = True
        self._closing = True
        self._wake.set()

    def join(self, deadline: float) -> bool:
        """Wait (by ``deadline``) for the thread to end after :meth:`begin_close`; True if it has."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Out of time: stop now. Shutting the exporter down makes a running export return its unsettled events:
        they stay pending in the spool (spool mode), or are counted as dropped, reason ``shutdown``."""
        self._stop.set()
        self._wake.set()
        shutdown_exporter(self.exporter, self.name)

    def count_leftovers(self) -> None:
        """After the thread ended: events still queued (memory mode) are lost at shutdown — counted as dropped."""
        with self._lock:
            self._record_door_drops_locked()
            left = list(self._queue)
            self._queue.clear()
            if self.spooled:  # in durable mode, in-memory events were counted as committed when taken
                self._unspooled_open -= len(left)
            else:
                self._counts.taken += len(left)
            self._counts.dropped += len(left)
            if left:
                self._counts.dropped_reasons["shutdown"] += len(left)
        self._metrics.dropped({"shutdown": len(left)})  # nobody waits on these counts: after them is fine
        for event in left:
            if event.waiter is not None:
                event.waiter.release(False, "shutdown")

    @property
    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> DeliveryStats:
        with self._lock:
            self._record_door_drops_locked()
            c = self._counts
            accepted = (c.committed if self.spooled else c.taken + len(self._queue)) + c.dropped_at_door
            dropped = c.dropped_at_door + c.dropped
            return DeliveryStats(
                accepted=accepted,
                delivered=c.delivered,
                failed=c.failed,
                dropped=dropped,
                pending=accepted - c.delivered - c.failed - dropped,
                failed_reasons=dict(c.failed_reasons),
                dropped_reasons=dict(c.dropped_reasons),
            )
