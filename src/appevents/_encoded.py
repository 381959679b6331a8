"""The encoded event and the answers about it: what travels from the publishing caller through the engine to an
exporter (documented for exporter authors in :mod:`appevents.exporting`, which re-exports the part they use), and
the waiters a caller or the OTLP bridge holds until its events are settled."""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "Check",
    "EncodedEvent",
    "EventExporter",
    "ExportOutcome",
    "Settlement",
    "Waiter",
    "WaiterGroup",
    "mask_credentials",
    "preferred_batch_size",
    "safe_url",
    "wants_event",
]


class Settlement(Protocol):
    """Someone waits for this event: the engine adds a party per stage that takes it (the spool writer, or each
    exporter) and each releases it once done (``ok`` False with a short ``reason`` when not delivered)."""

    def add_parties(self, n: int) -> None: ...

    def release(self, ok: bool = True, reason: str = "") -> None: ...


class Waiter:
    """Released when the event it is attached to is durable (spool committed) or settled by every exporter.

    ``publish(event, wait=True)`` blocks on it; ``publish_event(event, wait=True)`` awaits it without blocking the
    event loop (the releasing thread schedules the wake-up on the loop).
    """

    __slots__ = ("_callback", "_event", "_lock", "_remaining", "ok", "reason")

    def __init__(self, parties: int = 1) -> None:
        self._remaining = parties
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callback: Callable[[bool], None] | None = None
        #: False once any party reported the event as not delivered (dropped, failed, not durable).
        self.ok = True
        #: The first reason a party gave for not delivering (``queue_full``, ``unavailable``, ``too_large`` …).
        self.reason = ""

    def add_parties(self, n: int) -> None:
        with self._lock:
            self._remaining += n

    def on_release(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(ok)`` on release (at once if already released)."""
        with self._lock:
            if not self._event.is_set():
                self._callback = callback
                return
        callback(self.ok)

    def release(self, ok: bool = True, reason: str = "") -> None:
        """One party is done with the event (``reason``: why not, when not ``ok``); the last one wakes the waiter."""
        with self._lock:
            if not ok:
                self.ok = False
                self.reason = self.reason or reason
            self._remaining -= 1
            if self._remaining > 0 or self._event.is_set():
                return
            self._event.set()
            callback, self._callback = self._callback, None
        if callback is not None:
            callback(self.ok)

    @property
    def released(self) -> bool:
        """Every party is done with the event."""
        return self._event.is_set()

    def wait(self, timeout_s: float | None) -> bool:
        """True when released with every party reporting success within ``timeout_s``."""
        return self._event.wait(timeout_s) and self.ok


class WaiterGroup:
    """Waits for many events at once, under one lock: each event gets a :meth:`member` (or :meth:`members` for
    many); :meth:`wait` returns once every member is released, and :attr:`failed` counts the events not delivered,
    by reason (one per event, however many exporters refused it). The OTLP bridge waits for a request's events this
    way: a :class:`Waiter` per event would cost a ``threading.Event`` each. The members take the condition's lock
    directly (a C context manager, several times cheaper than the ``Condition``'s Python one: a member is taken
    and released two or three times per event); only :meth:`wait` goes through the condition."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # reentrant, as the Condition's own lock was
        self._done = threading.Condition(self._lock)
        self._pending = 0
        self.failed: Counter[str] = Counter()

    def member(self) -> Settlement:
        with self._lock:
            self._pending += 1
        return _GroupMember(self)

    def members(self, n: int) -> list[Settlement]:
        """``n`` members at once (one lock round trip)."""
        with self._lock:
            self._pending += n
        return [_GroupMember(self) for _ in range(n)]

    def wait(self, timeout_s: float) -> bool:
        """True when every member was released within ``timeout_s``."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout_s)

    def _settled(self, ok: bool, reason: str) -> None:  # with the lock held
        if not ok:
            self.failed[reason] += 1
        self._pending -= 1
        if self._pending == 0:
            self._done.notify_all()


class _GroupMember:
    __slots__ = ("_group", "_ok", "_reason", "_remaining")

    def __init__(self, group: WaiterGroup) -> None:
        self._group = group
        self._remaining = 1
        self._ok = True
        self._reason = ""

    def add_parties(self, n: int) -> None:
        with self._group._lock:
            self._remaining += n

    def release(self, ok: bool = True, reason: str = "") -> None:
        group = self._group
        with group._lock:
            if not ok and self._ok:
                self._ok, self._reason = False, reason
            self._remaining -= 1
            if self._remaining == 0:
                group._settled(self._ok, self._reason)


@dataclass(slots=True, eq=False)
class EncodedEvent:
    """One published event as every exporter receives it."""

    event_id: str
    event_type: str
    #: ``Event.model_dump_json()``, UTF-8: what goes on the wire. Decode or parse it only if you must.
    body: bytes
    #: The record attributes (``appevents.event_id``, ``appevents.event_name``, ``appevents.topic``; see
    #: :mod:`appevents._records`).
    attributes: dict[str, str]
    #: Publish time (ns since the epoch; ``workflow.now()`` inside workflows).
    timestamp_ns: int
    #: The publisher's OpenTelemetry trace context (0: none).
    trace_id: int = 0
    span_id: int = 0
    trace_flags: int = 0
    #: Position in the durable spool (0 without one).
    seq: int = 0
    #: Someone waits for this event (``publish(wait=True)``, the bridge): the engine releases it once settled.
    waiter: Settlement | None = field(default=None, repr=False)

    @property
    def event_name(self) -> str | None:
        """The lifecycle name (``workflow_start`` …), when the event has one."""
        return self.attributes.get("appevents.event_name")

    @property
    def topic(self) -> str | None:
        return self.attributes.get("appevents.topic")


@dataclass(slots=True)
class ExportOutcome:
    """What an exporter did with a batch; every event not listed here was delivered."""

    #: Refused for good, with a short reason (bounded cardinality: a kind and a code, never free text).
    failed: list[tuple[EncodedEvent, str]] = field(default_factory=list)
    #: Deliberately not sent, with a short reason.
    dropped: list[tuple[EncodedEvent, str]] = field(default_factory=list)
    #: Not settled: the destination is unavailable now (see the module docstring).
    retry: list[EncodedEvent] = field(default_factory=list)
    #: Why ``retry`` is not empty (one line, no secrets), for the engine's give-up message.
    retry_reason: str = ""


@runtime_checkable
class EventExporter(Protocol):
    """An exporter that takes encoded events (the cheap path). ``export_events`` runs on the exporter's own
    engine thread, one batch at a time, and should not raise (the engine counts a raising batch as failed)."""

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome: ...

    def shutdown(self) -> None: ...


@dataclass(frozen=True)
class Check:
    """One line of ``appevents doctor``: what was checked, whether it is healthy, what was seen, what to do.

    Exporters may offer ``diagnose(timeout_s: float) -> list[Check]`` (each check bounded by ``timeout_s``); the
    doctor runs it after building them. ``detail`` and ``fix`` never carry a secret (a secret is shown as
    ``****``, a token as its length). ``required`` checks decide the doctor's exit code; others only inform.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def safe_url(url: str) -> str:
    """``url`` as a check may show it: without user info, query or fragment (they may carry credentials)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<not a URL>"
    if not parts.scheme:  # host:port
        return url.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"]+@")
_SECRET_QUERY = re.compile(
    r"([?&][^=&\s'\"]*(?:secret|token|key|password|passwd|pwd|sig|signature|code|auth|credential)[^=&\s'\"]*=)"
    r"[^&#\s'\",)\]]+",
    re.IGNORECASE,
)


def mask_credentials(text: str) -> str:
    """``text`` with what URLs in it may carry masked: user info (``https://****@host``) and the values of
    credential-like query parameters (``?client_secret=****``). For log lines and reprs, where a URL is part of a
    longer text (:func:`safe_url` shows one URL on its own)."""
    return _SECRET_QUERY.sub(r"\1****", _URL_USERINFO.sub(r"\1****@", text))


def preferred_batch_size(exporter: object, default: int) -> int:
    """The most events ``exporter`` takes per call: its optional ``max_batch_size`` attribute (e.g. the SQLite log
    takes thousands: a transaction costs the same few GIL round trips whatever its size), else ``default``
    (``APPEVENTS_MAX_EXPORT_BATCH_SIZE``)."""
    size = getattr(exporter, "max_batch_size", None)
    return size if isinstance(size, int) and size > 0 else default


def wants_event(exporter: object, event: EncodedEvent) -> bool:
    """Whether ``exporter`` takes ``event`` at all: its optional ``accepts(event) -> bool`` (e.g. Segment takes
    lifecycle events only). Events an exporter does not take are never counted against it."""
    accepts: Callable[[EncodedEvent], bool] | None = getattr(exporter, "accepts", None)
    return True if accepts is None else accepts(event)
