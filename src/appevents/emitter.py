"""The hand-off between a publishing caller and the OTel LoggerProvider.

Building an OTel log record costs the SDK 10 to 20 µs (attribute cleaning, limits, processor fan-out). That work
belongs off the caller's path, so ``publish`` puts a small tuple — the event JSON, its attributes, timestamp and
the caller's OTel context — on an in-memory queue, and one emitter thread turns each into a real log record with
``Logger.emit(context=<the caller's context>)``; trace and span ids are therefore those of the publisher.

The queue is a deque the caller appends to; the emitter is woken when a batch has gathered
(``wake_batch``) or by its own ``interval`` timer, not per event: waking a thread per event costs more CPU
than emitting it (measured on the Temporal benchmark). ``drain``/``close`` wake it at once.
The queue is bounded (approximately, without a lock on the caller's path): past ``max_pending`` waiting events
new ones are dropped, counted and reported once per overflow episode.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import NamedTuple

from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.context import Context

from appevents.delivery import DeliveryStats, LogOnce, Overflow

__all__ = ["Emitter"]

_logger = logging.getLogger(__name__)


class _Item(NamedTuple):
    timestamp_ns: int
    event_type: str
    body: str
    attributes: dict[str, str]
    context: Context


class _Marker:
    """Put in the queue to learn when everything before it has been emitted (or to stop the thread)."""

    def __init__(self, stop: bool = False) -> None:
        self.stop = stop
        self.reached = threading.Event()


class Emitter:
    """One thread that turns queued events into OTel log records."""

    def __init__(self, logger: Logger, *, max_pending: int, wake_batch: int = 256, interval_s: float = 0.02) -> None:
        self._logger = logger
        self._max_pending = max_pending
        self._wake_batch = wake_batch
        self._interval_s = interval_s
        self._inbox: deque[_Item | _Marker] = deque()
        self._wake = threading.Event()
        self._submitted = 0
        self._emitted = 0
        self._failed = 0
        self._overflow = Overflow(
            _logger,
            "appevents: %d events are waiting to be emitted (or the pipeline is shut down); dropping new "
            "events until it catches up (raise APPEVENTS_MAX_QUEUE_SIZE).",
            max_pending,
        )
        self._closed = False
        self._log_once = LogOnce(_logger)
        self._thread = threading.Thread(target=self._run, name="appevents-emitter", daemon=True)
        self._thread.start()

    def submit(
        self, timestamp_ns: int, event_type: str, body: str, attributes: dict[str, str], context: Context
    ) -> None:
        """Queue one event (caller's path: a tuple and a deque append)."""
        if self._closed or self._submitted - self._emitted - self._failed >= self._max_pending:
            self._overflow.drop()
            return
        self._submitted += 1
        self._inbox.append(_Item(timestamp_ns, event_type, body, attributes, context))
        if len(self._inbox) >= self._wake_batch and not self._wake.is_set():
            self._wake.set()

    def _put_marker(self, marker: _Marker) -> None:
        self._inbox.append(marker)
        self._wake.set()

    def _run(self) -> None:
        inbox = self._inbox
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            while inbox:
                item = inbox.popleft()
                if isinstance(item, _Marker):
                    item.reached.set()
                    if item.stop:
                        return
                    continue
                self._emit(item)
            self._overflow.recovered()

    def _emit(self, item: _Item) -> None:
        try:
            self._logger.emit(
                timestamp=item.timestamp_ns,
                context=item.context,
                severity_number=SeverityNumber.INFO,
                body=item.body,
                attributes=item.attributes,
                event_name=item.event_type,
            )
            self._emitted += 1
        except Exception as exc:  # the emitter must outlive any processor bug
            self._failed += 1
            self._log_once(
                f"emit:{type(exc).__name__}",
                logging.ERROR,
                "appevents: emitting an event failed with %s: %s (further failures are counted, not logged)",
                type(exc).__name__,
                exc,
            )

    def drain(self, timeout_s: float) -> bool:
        """Wait until every event submitted before this call has been emitted; False on timeout."""
        if not self._thread.is_alive():
            return not self._inbox
        marker = _Marker()
        self._put_marker(marker)
        return marker.reached.wait(timeout_s)

    def close(self, timeout_s: float) -> bool:
        """Emit what is queued, then stop the thread. Later submissions are dropped and counted."""
        deadline = time.monotonic() + timeout_s
        self._closed = True
        marker = _Marker(stop=True)
        self._put_marker(marker)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return marker.reached.is_set()

    def stats(self) -> DeliveryStats:
        return DeliveryStats(
            accepted=self._submitted,
            exported=self._emitted,
            failed=self._failed,
            dropped=self._overflow.dropped,
            queued=max(0, self._submitted - self._emitted - self._failed),
        )
