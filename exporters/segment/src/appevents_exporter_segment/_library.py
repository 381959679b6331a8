"""What the exporter builds on in ``segment-analytics-python`` (2.4) beyond ``Client.track``: a consumer that also
reports which batches Segment accepted (the library reports only failures), and the library's message queue — a
``queue.Queue`` — waited on and taken back from directly. Kept here, in one place, for the next library upgrade.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

from segment.analytics.consumer import Consumer

__all__ = ["Message", "ReportingConsumer", "wait_drained", "wait_for_room", "withdraw"]

_logger = logging.getLogger("appevents.segment")

#: A message as the library queues and sends it (``type``, ``event``, ``messageId``, …).
Message = dict[str, Any]

#: How often a wait for room wakes up to notice a shutdown it is not notified of.
POLL_S = 0.05


class ReportingConsumer(Consumer):  # type: ignore[misc]  # the library is untyped
    """The library's consumer thread, also telling the exporter which batches Segment accepted."""

    def __init__(self, on_delivered: Callable[[Sequence[Message]], None], **options: Any) -> None:
        super().__init__(**options)
        self.name = "appevents-segment-consumer"
        self._on_delivered = on_delivered

    def request(self, batch: list[Message]) -> Any:
        response = super().request(batch)
        try:
            self._on_delivered(batch)
        except Exception:  # must not turn a delivered batch into a failed one
            _logger.exception("appevents: counting a delivered Segment batch failed")
        return response


def wait_for_room(messages: queue.Queue[Message], deadline: float, closed: Callable[[], bool]) -> bool:
    """Wait until the queue has room, up to ``deadline`` or until ``closed()``; True if there is room."""
    with messages.not_full:  # holds the queue's mutex: look at the deque directly (queue.full() would deadlock)
        while 0 < messages.maxsize <= len(messages.queue):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or closed():
                return False
            messages.not_full.wait(min(remaining, POLL_S))
    return not closed()


def withdraw(messages: queue.Queue[Message], taken_back: Sequence[Message]) -> int:
    """Remove these messages (by identity) from the queue, as if the consumer had finished them; how many were
    still there."""
    if not taken_back:
        return 0
    ids = {id(message) for message in taken_back}
    with messages.mutex:
        kept = [message for message in messages.queue if id(message) not in ids]
        taken = len(messages.queue) - len(kept)
        if taken:
            messages.queue.clear()
            messages.queue.extend(kept)
            messages.unfinished_tasks -= taken
            if messages.unfinished_tasks <= 0:
                messages.all_tasks_done.notify_all()
            messages.not_full.notify(taken)
    return taken


def wait_drained(messages: queue.Queue[Message], timeout_s: float) -> bool:
    """Wait until every queued message has been answered (sent or given up), up to ``timeout_s``."""
    with messages.all_tasks_done:
        return messages.all_tasks_done.wait_for(lambda: not messages.unfinished_tasks, timeout_s)
