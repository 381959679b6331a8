"""Segment's answers, per event: what one ``export_events`` call sent and what became of each event.

A :class:`Sent` is one event of a :class:`Call`; its :class:`Verdict` is set when Segment (or the library, or the
exporter's own bound) settles it. :func:`verdict_for` reads an error the library reports through ``on_error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appevents.exporting import EncodedEvent
from appevents_exporter_segment._library import Message

__all__ = ["DELIVERED", "TRANSIENT_4XX", "Call", "Sent", "Verdict", "verdict_for"]

#: Statuses the library retries that are about Segment's state, not the message: after the library's retry
#: budget they are returned for retry; every other 4xx is a refusal.
TRANSIENT_4XX = frozenset({408, 429, 460})


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # "delivered", "failed" or "retry"
    reason: str = ""


DELIVERED = Verdict("delivered")


@dataclass(eq=False, slots=True)
class Call:
    """The events of one ``export_events`` call, in batch order, and how many Segment has yet to answer."""

    events: list[Sent] = field(default_factory=list)
    unanswered: int = 0


@dataclass(eq=False, slots=True)
class Sent:
    """One event of an ``export_events`` call, and what became of it (``verdict`` None: not answered yet)."""

    event: EncodedEvent
    call: Call
    #: The message's ``messageId`` (the event id), once it is handed to the library.
    message_id: str = ""
    #: The message the library queued (None until ``track()`` returned).
    message: Message | None = None
    verdict: Verdict | None = None


def verdict_for(error: Exception) -> Verdict:
    """Refused (``refused:<status>``) when Segment said no to the messages; else not settled, for retry."""
    status = getattr(error, "status", None)
    if isinstance(status, int):
        if 400 <= status < 500 and status not in TRANSIENT_4XX:
            return Verdict("failed", f"refused:{status}")
        return Verdict("retry", f"Segment answered {status}")
    if type(error) is Exception:  # the library's own give-ups (rate-limit budget, full queue on re-queue)
        return Verdict("retry", f"the Segment library gave up: {(str(error).splitlines() or [''])[0][:120]}")
    return Verdict("retry", f"cannot reach Segment ({type(error).__name__})")
