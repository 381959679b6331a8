"""Delivery between the caller and one exporter: a bounded queue, a worker thread, counters.

OpenTelemetry's ``BatchLogRecordProcessor`` fits the shape but not our promises: it logs a warning per dropped
record, ignores the export result, and its ``force_flush`` exports on the caller's thread ignoring the timeout.
:class:`DeliveryProcessor` keeps the same interface (a ``LogRecordProcessor``) and adds what we promise:

* ``on_emit`` is an append to a deque — no I/O, no locks held across exports, never raises;
* a full queue drops the *new* record, counts it and warns once per overflow episode;
* the worker thread survives anything the exporter raises; failures are counted, logged once per cause;
* ``force_flush(timeout)`` waits for the worker to drain what was accepted so far, bounded by the timeout.

:class:`LogOnce` is the small helper exporters use to keep "logged once, not per event".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource

__all__ = ["DeliveryProcessor", "DeliveryStats", "LogOnce", "Overflow"]

_logger = logging.getLogger(__name__)


class LogOnce:
    """Log a message the first time a given cause is seen; later occurrences are only counted.

    ``reset(cause)`` re-arms a cause (e.g. when a component comes back, so the next outage is reported again).
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, cause: str, level: int, message: str, *args: object) -> bool:
        with self._lock:
            count = self._seen.get(cause, 0)
            self._seen[cause] = count + 1
        if count == 0:
            self._logger.log(level, message, *args)
            return True
        return False

    def count(self, cause: str) -> int:
        with self._lock:
            return self._seen.get(cause, 0)

    def reset(self, cause: str) -> None:
        with self._lock:
            self._seen.pop(cause, None)


class Overflow:
    """Counts events refused by a full (or closed) queue; warns once per overflow episode, not per event.

    An episode ends when the consumer has drained the queue (it calls :meth:`recovered`), not when one event
    squeezes in, so a queue that stays saturated warns once, not at every wobble.
    """

    def __init__(self, logger: logging.Logger, message: str, *args: object) -> None:
        self._logger = logger
        self._message = message
        self._args = args
        self.dropped = 0
        self._warned = False

    def recovered(self) -> None:
        self._warned = False

    def drop(self) -> None:
        self.dropped += 1
        if not self._warned:
            self._warned = True
            self._logger.warning(self._message + " Dropped so far: %d", *self._args, self.dropped)


@dataclass(frozen=True)
class DeliveryStats:
    """Counters of one stage (all monotonic except ``queued``).

    OTel's exporter interface reports one result per batch, so ``exported``/``failed`` count records in batches
    the exporter reported as succeeded/failed: a batch with one undeliverable event counts whole under
    ``failed``. Exporters keep exact per-event counters in their own ``stats()``.
    """

    #: Records taken into the queue.
    accepted: int
    #: Records in batches the exporter reported as delivered.
    exported: int
    #: Records in batches the exporter reported as failed (or that raised).
    failed: int
    #: Records refused because the queue was full or closed.
    dropped: int
    #: Records waiting (including a batch being exported).
    queued: int


def _readable(record: ReadWriteLogRecord) -> ReadableLogRecord:
    """The frozen record exporters are promised, as the SDK's own processors hand over.

    Unlike the SDK's batch processor we do not copy the API record to drop its OTel context (5 µs a record on the
    emitter thread, a third of its throughput): a record stays queued for about one schedule delay, so holding
    the publisher's context that long costs little, and exporters read trace and span ids from the record.
    """
    return ReadableLogRecord(
        log_record=record.log_record,
        resource=record.resource if record.resource is not None else Resource.create({}),
        instrumentation_scope=record.instrumentation_scope,
        limits=record.limits,
    )


class DeliveryProcessor(LogRecordProcessor):
    """Queue log records for one exporter and export them in batches from a worker thread."""

    def __init__(
        self,
        exporter: LogRecordExporter,
        *,
        name: str,
        max_queue_size: int = 20_000,
        max_export_batch_size: int = 512,
        schedule_delay_s: float = 0.2,
    ) -> None:
        self.exporter = exporter
        self.name = name
        self._max_queue_size = max_queue_size
        self._max_batch = max_export_batch_size
        self._delay = schedule_delay_s
        self._queue: deque[ReadableLogRecord] = deque()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._accepted = 0
        self._done = 0  # exported + failed, in acceptance order
        self._exported = 0
        self._failed = 0
        self._overflow = Overflow(
            _logger,
            "appevents: %s queue is full (%d events) or closed; dropping new events until it drains "
            "(raise APPEVENTS_MAX_QUEUE_SIZE or check the destination).",
            name,
            max_queue_size,
        )
        self._closed = False
        self._log_once = LogOnce(_logger)
        self._thread = threading.Thread(target=self._run, name=f"appevents-{name}", daemon=True)
        self._thread.start()

    # -- caller's path -------------------------------------------------------------------------------------------
    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self._closed or len(self._queue) >= self._max_queue_size:
            self._overflow.drop()
            return
        self._accepted += 1
        self._queue.append(_readable(log_record))
        if len(self._queue) >= self._max_batch and not self._wake.is_set():
            self._wake.set()

    # -- worker --------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._drain()
            if self._closed and not self._queue:
                return

    def _drain(self) -> None:
        while self._queue:
            batch: list[ReadableLogRecord] = []
            while self._queue and len(batch) < self._max_batch:
                batch.append(self._queue.popleft())
            self._export(batch)
        self._overflow.recovered()

    def _export(self, batch: Sequence[ReadableLogRecord]) -> None:
        try:
            result = self.exporter.export(batch)
        except Exception as exc:  # the worker must outlive any exporter bug
            self._log_once(
                f"raise:{type(exc).__name__}",
                logging.ERROR,
                "appevents: exporter %s raised %s; its events are counted as failed (further errors of this "
                "kind are counted, not logged)",
                self.name,
                type(exc).__name__,
            )
            result = LogRecordExportResult.FAILURE
        with self._progress:
            if result is LogRecordExportResult.SUCCESS:
                self._exported += len(batch)
            else:
                self._failed += len(batch)
            self._done += len(batch)
            self._progress.notify_all()

    # -- control -------------------------------------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every record accepted before this call has been exported (or failed), up to the timeout."""
        target = self._accepted
        deadline = time.monotonic() + timeout_millis / 1000
        self._wake.set()
        with self._progress:
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._progress.wait(min(remaining, 0.05))
                self._wake.set()
        return bool(self.exporter.force_flush(max(0, int((deadline - time.monotonic()) * 1000))))

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        self.close(timeout_millis)

    def close(self, timeout_millis: int = 30_000) -> bool:
        """Deliver what is queued within the timeout, stop the worker, shut the exporter down.

        Returns False if records were left undelivered. New records are refused (and counted) from here on.
        """
        if self._closed:
            return not self._queue
        deadline = time.monotonic() + timeout_millis / 1000
        drained = self.force_flush(timeout_millis)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self.exporter.shutdown()  # type: ignore[no-untyped-call]
        return drained

    def stats(self) -> DeliveryStats:
        return DeliveryStats(
            accepted=self._accepted,
            exported=self._exported,
            failed=self._failed,
            dropped=self._overflow.dropped,
            queued=self._accepted - self._done,
        )
