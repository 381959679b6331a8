"""Durable mode's intake: the publishing caller appends to the writer's inbox; its thread group-commits to the
spool (one SQLite transaction every ``spool_commit_interval_ms``), tells each :class:`~appevents._engine.Channel`
what was committed (the channels then read the spool through their own cursors), checkpoints the cursors, keeps
the owner's heartbeat and adopts orphans — the rows of pipelines whose process died. The ``spool`` stage of
``stats()`` and the self-metrics is this writer's: committed counts as delivered, refused as dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence

from appevents._counting import DeliveryStats, EpisodeWarning, LogOnce, drain_reasons
from appevents._encoded import EncodedEvent
from appevents._engine import SPOOL_STAGE, Channel
from appevents._metrics import StageMetrics, instruments_for
from appevents._spool import PURGE_ROWS, Spool
from appevents._threads import start_background_thread

__all__ = ["SpoolWriter"]

_logger = logging.getLogger("appevents")
#: How often settled rows are purged (in steps of PURGE_ROWS per owner): often enough to keep up with a replay,
#: each step short enough not to hold new events back.
_CHECKPOINT_EVERY_S = 0.1


class SpoolWriter:
    """Group-commits published events to the spool and tells the channels; checkpoints cursors; adopts orphans."""

    def __init__(
        self,
        spool: Spool,
        channels: Sequence[Channel],
        *,
        commit_interval_s: float,
        max_inbox: int,
        metrics: StageMetrics | None = None,
    ) -> None:
        self.spool = spool
        #: The ``spool`` stage's self-metrics (committed counts as exported), recorded before the counters change.
        self._metrics = metrics if metrics is not None else instruments_for().stage(SPOOL_STAGE)
        #: (rows, bytes) in the spool as last read; read on this thread when a metrics collection asked for it.
        self._size: tuple[int, int] | None = None
        self._size_wanted = False
        self._channels = list(channels)
        self._interval = commit_interval_s
        self._max_inbox = max_inbox
        self._inbox: deque[EncodedEvent] = deque()
        self._wake = threading.Event()
        self._lock = threading.Condition()
        self._taken = 0  # taken out of the inbox by the writer (counted under the lock, as the inbox is emptied)
        self._committed = 0
        self._dropped: Counter[str] = Counter()
        self._dropped_at_door = 0
        self._door_drops: deque[str] = deque()  # reasons, appended lock-free by publishers
        #: Events the spool could not take (disk full, I/O error) that went on to the channels in memory.
        self._unspooled = 0
        self._failing = False  # the last commit failed: the next one that works says so
        #: The seq of this pipeline's last committed event: what a flush waits for every channel's cursor to pass.
        self.last_seq = 0
        self._closing = False
        self._refusing = False
        self._full_warning = EpisodeWarning()
        self._log_once = LogOnce(_logger)
        self._adopting: dict[str, set[str]] = {}  # orphan → channels still replaying it
        self._saved_cursors: dict[str, dict[str, int]] = {}  # as the last checkpoint saved them
        self._purge_pending = False  # the last checkpoint left passed rows for the next one
        self._thread = threading.Thread(target=self._run, name="appevents-spool", daemon=True)

    def start(self) -> SpoolWriter:
        self._claim_orphans()
        start_background_thread(self._thread)
        return self

    def _claim_orphans(self) -> None:
        claimed, left = self.spool.claim_orphans()
        for orphan in claimed:
            # Only to the exporters its owner had (each with the same destination here), from their own cursors.
            targets = [c for c in self._channels if c.name in orphan.exporters]
            self._adopting[orphan.owner] = {c.name for c in targets}
            for channel in targets:
                channel.adopt(orphan)
        for owner, missing in left:
            self._log_once(
                f"left:{owner}",
                logging.WARNING,
                "appevents: the spool at %s holds events of a previous run for destinations not configured here: "
                "%s; they are left for a run that has them",
                self.spool.path,
                missing,
            )

    # -- publishing caller ---------------------------------------------------------------------------------------
    def room(self) -> int:
        """How many more events :meth:`submit` takes now (0 once closing)."""
        return 0 if self._refusing else max(0, self._max_inbox - len(self._inbox))

    def submit(self, event: EncodedEvent) -> bool:
        """Append ``event`` to the inbox; True if taken. No lock on this path, the refusal included: a signal
        handler may publish on a thread it interrupted in here, and workflow code may not create locks."""
        if self._refusing or len(self._inbox) >= self._max_inbox:
            reason = "shutdown" if self._refusing else "queue_full"
            self._door_drops.append(reason)  # counted (and put in the metrics) by the writer thread or stats()
            if event.waiter is not None:
                event.waiter.release(False, reason)
            if reason == "queue_full":
                self._log_once(
                    "inbox-full",
                    logging.WARNING,
                    "appevents: %d events wait for the spool writer (the spool at %s is slow or locked); new "
                    "events are dropped and counted",
                    self._max_inbox,
                    self.spool.path,
                )
            return False
        self._inbox.append(event)
        if event.waiter is not None and not self._wake.is_set():
            self._wake.set()
        return True

    def _record_door_drops_locked(self) -> None:
        reasons = drain_reasons(self._door_drops)
        if reasons:
            self._metrics.dropped(reasons)
            self._dropped_at_door += sum(reasons.values())
            self._dropped.update(reasons)

    # -- writer thread -------------------------------------------------------------------------------------------
    def _run(self) -> None:
        start = time.monotonic()
        next_checkpoint = start + _CHECKPOINT_EVERY_S
        next_heartbeat = start + 1.0
        next_scan = start + 5.0
        next_size = 0.0
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            closing = self._closing
            now = time.monotonic()
            read_size = self._size_wanted and now >= next_size
            for step, due in (
                (self._commit, True),
                (self.checkpoint, now >= next_checkpoint or closing),
                (self.spool.heartbeat, now >= next_heartbeat),
                (self._claim_orphans, now >= next_scan and not closing),
                (self._read_size, read_size),
            ):
                if not due:
                    continue
                try:
                    step()
                except Exception as exc:  # disk full, locked for too long...: each step is tried on its own
                    self._log_once.failure("spool", exc, f"the spool at {self.spool.path}", "tried again")
            if now >= next_checkpoint:
                next_checkpoint = now + _CHECKPOINT_EVERY_S
            if now >= next_heartbeat:
                next_heartbeat = now + 1.0
            if now >= next_scan:
                next_scan = now + 5.0
            if read_size:
                next_size = now + 1.0
            if closing and not self._inbox:
                return

    def _commit(self) -> None:
        with self._lock:
            self._record_door_drops_locked()
            batch = [self._inbox.popleft() for _ in range(len(self._inbox))]
            self._taken += len(batch)
        if not batch:
            return
        try:
            taken, last_seq = self.spool.append(batch)
        except Exception:
            self._go_on_in_memory(batch)
            raise
        committed = batch[:taken]
        # Counted by the channels before the rows are visible: a channel never settles a row it has not counted.
        wanted = [sum(1 for event in committed if channel.wants(event)) for channel in self._channels]
        for channel, count in zip(self._channels, wanted, strict=True):
            channel.committed(count)
        try:
            self.spool.commit()
        except Exception:
            # SQLite has rolled the transaction back itself (disk full, I/O error); rollback() ends it if not.
            for channel, count in zip(self._channels, wanted, strict=True):
                channel.committed(-count)
            self.spool.rollback()
            self._go_on_in_memory(batch)
            raise
        if taken:
            self.last_seq = last_seq
        for channel in self._channels:
            channel.wake()
        if self._failing:
            self._failing = False
            self._log_once.reset_prefix("spool:")
            _logger.warning(
                "appevents: the spool at %s takes events again; %d event(s) went on in memory meanwhile (not durable)",
                self.spool.path,
                self._unspooled,
            )
        self._settle(batch, taken, "spool_full")

    def _go_on_in_memory(self, batch: list[EncodedEvent]) -> None:
        """A commit failed (disk full, I/O error): the batch is settled at once for the spool stage — failed,
        reason ``spool_error``, its ``wait=True`` callers told False — and goes on to the channels in memory, best
        effort, so a failing disk never stops delivery to a destination that is up. A channel drops such events
        only at its memory bound (``queue_full``)."""
        self._failing = True
        self._metrics.failed({"spool_error": len(batch)})
        with self._lock:
            self._unspooled += len(batch)
            self._lock.notify_all()
        for event in batch:
            if event.waiter is not None:
                event.waiter.release(False, "spool_error")
                event.waiter = None  # released: the channels must not release it again
            for channel in self._channels:
                if channel.wants(event):
                    channel.offer_unspooled(event)

    def _read_size(self) -> None:
        self._size_wanted = False
        self._size = self.spool.size()

    def size(self) -> tuple[int, int] | None:
        """(rows, bytes) in the spool as last read, None before the first read; asks the writer thread to read
        them again (a ``COUNT(*)``, so at most once a second, and only while somebody asks)."""
        self._size_wanted = True
        return self._size

    def _settle(self, batch: list[EncodedEvent], taken: int, reason: str) -> None:
        refused = len(batch) - taken
        if refused and self._full_warning.starts():
            _logger.warning(
                "appevents: the spool at %s %s; %d new event(s) dropped and counted (overflow policy: the newest "
                "are refused; raise APPEVENTS_SPOOL_MAX_BYTES or check the destinations; said again at most once "
                "a minute)",
                self.spool.path,
                f"is full ({self.spool.max_bytes} bytes)" if reason == "spool_full" else "failed",
                refused,
            )
        elif not refused:
            self._full_warning.ended()
        self._metrics.exported(taken)
        self._metrics.dropped({reason: refused})
        with self._lock:
            self._committed += taken
            self._dropped[reason] += refused
            self._lock.notify_all()
        for index, event in enumerate(batch):
            if event.waiter is not None:
                event.waiter.release(index < taken, "" if index < taken else reason)

    def checkpoint(self, *, final: bool = False) -> None:
        """Save every channel's cursors and purge what all of them passed (in steps of PURGE_ROWS rows per owner,
        ``final``: all at once)."""
        cursors: dict[str, dict[str, int]] = {}
        finished_by: dict[str, set[str]] = {}
        for channel in self._channels:
            by_owner, finished = channel.cursors()
            for owner, seq in by_owner.items():
                cursors.setdefault(owner, {})[channel.name] = seq
            for owner in finished:
                finished_by.setdefault(owner, set()).add(channel.name)
        done = [o for o, names in self._adopting.items() if names <= finished_by.get(o, set())]
        if not final and not done and not self._purge_pending and cursors == self._saved_cursors:
            return  # nothing moved since the last checkpoint: no write
        forgotten, self._purge_pending = self.spool.checkpoint(cursors, done, purge_limit=None if final else PURGE_ROWS)
        self._saved_cursors = cursors
        for owner in forgotten:  # rows left (a purge in steps): cursors saved and purged again next time
            del self._adopting[owner]
        for channel in self._channels:
            channel.forget(forgotten)

    # -- control -------------------------------------------------------------------------------------------------
    def flush(self, deadline: float) -> bool:
        """Wait until everything submitted before this call is committed (or refused)."""
        with self._lock:
            target = self._taken + len(self._inbox)
        self._wake.set()
        with self._lock:
            while self._committed + self._unspooled + sum(self._dropped.values()) - self._dropped_at_door < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._lock.wait(min(remaining, 0.05))
        return True

    def refuse_new(self) -> None:
        """Refuse what is submitted from now on (counted, reason ``shutdown``); the inbox is still committed."""
        self._refusing = True

    def close_intake(self, deadline: float) -> None:
        """Commit what was submitted, refuse what comes later, stop the writer thread (by ``deadline``)."""
        self._refusing = True
        self._closing = True
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def finish(self) -> int | None:
        """Final checkpoint after the channels stopped, then close the spool; returns how many of this pipeline's
        events are left in the spool for the next start (None if that cannot be told). A writer still stuck in
        SQLite (a lock held by another process) keeps its connection: the last checkpoint then is the one it
        made."""
        if self._thread.is_alive():
            return None
        try:
            self.checkpoint(final=True)
        except Exception as exc:  # disk full: the cursors saved by the channels stand
            self._log_once.failure("spool", exc, f"the last checkpoint of the spool at {self.spool.path}", "skipped")
        try:
            return self.spool.close()
        except Exception as exc:
            self._log_once.failure("close", exc, f"closing the spool at {self.spool.path}", "left as it is")
            return None

    @property
    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> DeliveryStats:
        """The ``spool`` stage: events committed count as delivered; events the spool could not take (disk full,
        I/O error) as failed, reason ``spool_error`` — they went on in memory, see the exporters' counts; refused
        ones (full, closed) as dropped; pending are waiting for (or in) a commit."""
        with self._lock:
            self._record_door_drops_locked()
            dropped = sum(self._dropped.values())
            accepted = self._taken + len(self._inbox) + self._dropped_at_door
            return DeliveryStats(
                accepted=accepted,
                delivered=self._committed,
                failed=self._unspooled,
                dropped=dropped,
                pending=accepted - self._committed - self._unspooled - dropped,
                failed_reasons={"spool_error": self._unspooled} if self._unspooled else {},
                dropped_reasons={k: v for k, v in self._dropped.items() if v},
            )
