"""Admission and acknowledgement: when the bridge may say "taken" to an OTLP client.

A request's events are admitted only if every queue has room for all of them (else the client is told to come
back later: 429 / ``RESOURCE_EXHAUSTED`` with a retry hint), so accepted data is never dropped for a full queue.
The answer waits until the events are **durable** — committed to the spool in durable mode — or, without a spool,
**settled** by every exporter. So an acknowledged event is delivered (or spooled): a bridge killed or stopped
after answering loses nothing it acknowledged, and one stopped before answering has acknowledged nothing, which
the client sends again (delivery is at least once; the event id is the deduplication key).

When some events of an admitted request were not delivered:

* for a passing reason (a destination unavailable, a queue or spool full, shutting down, an answer not ready in
  time) the whole request is answered "unavailable, retry" — what was delivered is delivered again, never lost;
* for a lasting reason (an exporter refused the event for good: too large, invalid for that destination) they are
  answered as OTLP partial success (``rejected_log_records``) with the reasons: retrying would not help.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from appevents._encoded import EncodedEvent, WaiterGroup
from appevents._pipeline import Pipeline

__all__ = ["Answer", "Intake", "Verdict"]

#: Reasons an event was not delivered that may pass (retrying the request can succeed).
TRANSIENT_REASONS = frozenset({"queue_full", "shutdown", "unavailable", "spool_full", "spool_error", "no_exporter"})


class Verdict(Enum):
    OK = "ok"  # everything admitted was delivered or refused for good (see Answer.failed)
    BUSY = "busy"  # no room: retry after a while (429 / RESOURCE_EXHAUSTED)
    UNAVAILABLE = "unavailable"  # closing, or a passing failure: retry (503 / UNAVAILABLE)


@dataclass
class Answer:
    verdict: Verdict
    #: Events refused for good by an exporter, by reason (OK only).
    failed: Counter[str] = field(default_factory=Counter)
    #: Why the verdict is not OK (one line, no secrets).
    why: str = ""


class Intake:
    """Hands a request's events to the pipeline and waits for them to be durable or settled (see the module doc)."""

    def __init__(self, pipeline: Pipeline, *, ack_timeout_s: float, retry_after_s: float = 1.0) -> None:
        self.pipeline = pipeline
        self.ack_timeout_s = ack_timeout_s
        self.retry_after_s = retry_after_s
        self._admit = threading.Lock()  # room check and hand-over are one step for concurrent requests
        self._closed = False
        self._inflight = 0
        self._idle = threading.Condition()

    def deliver(self, events: Sequence[EncodedEvent]) -> Answer:
        if not events:
            return Answer(Verdict.OK)
        with self._idle:
            if self._closed:
                return Answer(Verdict.UNAVAILABLE, why="the bridge is shutting down")
            self._inflight += 1
        try:
            return self._deliver(events)
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def _deliver(self, events: Sequence[EncodedEvent]) -> Answer:
        group = WaiterGroup()
        with self._admit:
            room = self.pipeline.room()
            if room < len(events):
                return Answer(Verdict.BUSY, why=f"the delivery queues are full ({room} free for {len(events)} events)")
            for event, member in zip(events, group.members(len(events)), strict=True):
                event.waiter = member
                self.pipeline.submit(event)
        if not group.wait(self.ack_timeout_s):
            return Answer(Verdict.UNAVAILABLE, why=f"the events were not delivered within {self.ack_timeout_s:g}s")
        failed = Counter(group.failed)
        passing = next((reason for reason in failed if reason in TRANSIENT_REASONS), "")
        if passing:
            return Answer(Verdict.UNAVAILABLE, why=f"{sum(failed.values())} event(s) not delivered ({passing})")
        return Answer(Verdict.OK, failed=failed)

    def close(self, timeout_s: float) -> bool:
        """Take no new request; wait (up to ``timeout_s``) for those in flight to be answered. True if none is left."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            self._closed = True
            while self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True
