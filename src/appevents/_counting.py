"""Counting and reporting helpers shared by the engine and the exporters.

:class:`DeliveryStats` is what :meth:`appevents.EventStore.stats` gives per stage; :class:`LogOnce` keeps
"failures are counted and logged once, not per event"; :class:`EpisodeWarning` does it for a condition that comes
and goes (a full queue).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

__all__ = ["DeliveryStats", "EpisodeWarning", "LogOnce", "drain_reasons"]


def drain_reasons(reasons: deque[str]) -> Counter[str]:
    """Take every reason out of ``reasons`` — appended by publishers without a lock (``deque.append`` is atomic),
    as a signal handler or workflow code may be the publisher — and count them. Publishers appending meanwhile are
    counted now or by the next call, never lost nor counted twice."""
    counted: Counter[str] = Counter()
    while reasons:
        try:
            counted[reasons.popleft()] += 1
        except IndexError:
            break
    return counted


class LogOnce:
    """Log a message the first time a given cause is seen; later occurrences are only counted.

    ``reset(cause)`` re-arms a cause (e.g. when a component comes back, so the next outage is reported again).
    Takes no lock: a signal handler may publish (and so come here) on a thread interrupted in here, where a
    non-reentrant lock would deadlock it; a dict's ``setdefault`` and ``next()`` on an ``itertools.count`` are
    atomic in CPython, so a cause is still logged once.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: dict[str, itertools.count[int]] = {}

    def __call__(self, cause: str, level: int, message: str, *args: object) -> bool:
        counter = self._seen.get(cause)
        if counter is None:
            counter = self._seen.setdefault(cause, itertools.count())
        if next(counter) == 0:
            self._logger.log(level, message, *args)
            return True
        return False

    def failure(self, scope: str, exc: BaseException, what: str, consequence: str, level: int = logging.ERROR) -> bool:
        """Catch, count, log once per exception type: ``"appevents: <what> failed (<Type>: <exc>); <consequence>"``
        the first time ``scope`` fails with this type of exception; later ones are only counted
        (:meth:`count` of ``"<scope>:<Type>"``). The message holds the exception's text: never pass one that may
        carry a secret."""
        kind = type(exc).__name__
        return self(
            f"{scope}:{kind}",
            level,
            "appevents: %s failed (%s: %s); %s (further failures of this kind are counted, not logged)",
            what,
            kind,
            exc,
            consequence,
        )

    def count(self, cause: str) -> int:
        counter = self._seen.get(cause)
        return 0 if counter is None else int(repr(counter)[6:-1])  # count(N): next() was called N times

    def reset(self, cause: str) -> None:
        self._seen.pop(cause, None)

    def reset_prefix(self, prefix: str) -> None:
        """Re-arm every cause that starts with ``prefix`` (e.g. every failure of one scope)."""
        for cause in [c for c in list(self._seen) if c.startswith(prefix)]:
            self._seen.pop(cause, None)


class EpisodeWarning:
    """Whether to warn about a condition that comes and goes (a queue full, then drained, then full again): at its
    first start, then at a start that follows an end, once :attr:`interval_s` has passed since the last warning.
    Under sustained overload a small queue fills and drains every batch; one warning a minute says it, one per
    batch would bury the log (the events themselves are counted either way). A start long after the last warning
    is warned about however soon after that warning the condition ended.

    :meth:`starts` is lock-free (a publisher may be a signal handler; two racing publishers may both warn, which
    is harmless); :meth:`ended` is called by the one thread that sees the condition end.
    """

    #: Seconds between two warnings about the same condition.
    interval_s: float = 60.0

    __slots__ = ("_ended", "_warned_at")

    def __init__(self) -> None:
        self._warned_at: float | None = None
        self._ended = False

    def starts(self) -> bool:
        """The condition is (still) on: True if this is the time to warn. Called on every event dropped, on the
        publisher's path: without an end since the last warning it answers from one attribute, no clock read."""
        warned_at = self._warned_at
        if warned_at is not None and not self._ended:
            return False
        now = time.monotonic()
        if warned_at is not None and now - warned_at < self.interval_s:
            return False
        self._ended = False
        self._warned_at = now
        return True

    def ended(self) -> None:
        """The condition is off: a later start may warn again."""
        self._ended = True


@dataclass(frozen=True)
class DeliveryStats:
    """Counters of one stage, in events: ``accepted = delivered + failed + dropped + pending`` at every moment.

    An exporter stage counts every event it took (or refused at a full queue) and settles each one: delivered,
    failed (refused for good, or — without a spool — not deliverable within the retry window), dropped (not
    sent on purpose: a full queue, a missing component, left in memory at shutdown) or still pending. The
    ``spool`` stage counts events committed to the spool as delivered.
    """

    accepted: int
    delivered: int
    failed: int
    dropped: int
    pending: int
    #: ``failed`` by reason (e.g. ``refused:INVALID_ARGUMENT``, ``too_large``, ``unavailable``).
    failed_reasons: dict[str, int] = field(default_factory=dict)
    #: ``dropped`` by reason (e.g. ``queue_full``, ``no_component``, ``shutdown``, ``spool_full``).
    dropped_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def exported(self) -> int:
        """Former name of :attr:`delivered`."""
        return self.delivered

    @property
    def queued(self) -> int:
        """Former name of :attr:`pending`."""
        return self.pending
