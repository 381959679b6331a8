"""One attempt at delivering events, and how every answer is settled: the same for the three transports.

An attempt needs the sidecar to answer and to have the component (else the events wait, or are dropped as
``no_component``), and the auth headers when the transport sends them (else the events wait). Then the transport's
chunks go out, one request each, up to ``max_in_flight`` at once on the exporter's thread pool, and each answer
settles its chunk here: delivered; retried (transient, or a rejected token that can be refreshed); split in two
and sent again (a failure kind in the transport's ``halve_on``); failed for good; dropped. Settling happens on the
thread that called ``export_events``, so the counters need no lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from appevents.exporting import EncodedEvent, ExportOutcome, LogOnce, block_process_signals
from appevents_exporter_dapr._auth import AuthError, HeaderProvider, RefreshableHeaderProvider
from appevents_exporter_dapr._failures import (
    EntryRefused,
    Failure,
    classify_entry_error,
    classify_error,
    describe_error,
    error_code,
    failure_cause,
    failure_reason,
)
from appevents_exporter_dapr._settings import DaprExporterSettings
from appevents_exporter_dapr._sidecar import Sidecar, SidecarNotReady
from appevents_exporter_dapr._transports import Refused, Send, Transport

__all__ = ["THREAD_PREFIX", "Attempt", "Counters", "Dispatcher"]

THREAD_PREFIX = "appevents-dapr"


@dataclass(slots=True)
class Counters:
    """The exporter's counters, as :class:`~appevents_exporter_dapr.DaprExporterStats` reports them."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    returned: int = 0
    auth_failures: int = 0
    unauthorized: int = 0
    calls: int = 0
    ignored: int = 0


@dataclass(slots=True)
class Attempt:
    """What one attempt left to retry, and the last error seen."""

    retry: list[EncodedEvent]
    failure: BaseException | None = None


class Dispatcher:
    """Sends events through one :class:`~appevents_exporter_dapr._transports.Transport` and settles the answers.

    Owns the sidecar client and the thread pool; :meth:`close` (from any thread) stops both.
    """

    def __init__(
        self,
        settings: DaprExporterSettings,
        transport: Transport,
        header_provider: HeaderProvider | None,
        counters: Counters,
        log_once: LogOnce,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._header_provider = header_provider
        self._counters = counters
        self._log_once = log_once
        self.sidecar = Sidecar(settings, transport.component, transport.kind, log_once)
        #: Set by :meth:`close`: nothing more is sent, and what is cut short is not settled (returned as retry).
        self.stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        #: Guards the pool against :meth:`close` from another thread: nothing is submitted once stopping.
        self._pool_lock = threading.Lock()

    def attempt(self, events: list[EncodedEvent], outcome: ExportOutcome) -> Attempt:
        """Send ``events`` once; settle into ``outcome`` what the answers settle, return the rest."""
        try:
            if not self.sidecar.component_registered():
                self._drop(events, outcome)
                return Attempt([])
            client = self.sidecar.client()
        except SidecarNotReady as exc:
            return Attempt(events, exc)
        try:
            headers = self._headers()
        except AuthError as exc:
            self._counters.auth_failures += 1
            self._log_once(
                f"auth:{exc.status}",
                logging.ERROR,
                "appevents: no auth token for the Dapr binding, events wait and are retried: %s",
                exc,
            )
            return Attempt(events, exc)
        return self._send(self._transport.sender(client, headers), self._transport.chunks(events), outcome)

    def close(self) -> None:
        """Stop: calls in flight end at once (``CANCELLED``), queued ones are cancelled, the threads have ended
        when this returns. Idempotent."""
        with self._pool_lock:
            self.stopping.set()
            pool, self._pool = self._pool, None
        self.sidecar.close()  # first: calls in flight end now (CANCELLED) instead of at their deadline
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _headers(self) -> Mapping[str, str]:
        if not self._transport.uses_auth or self._header_provider is None:
            return {}
        return self._header_provider.headers()

    # -- sending -------------------------------------------------------------------------------------------------
    def _send(self, send: Send, chunks: list[list[EncodedEvent]], outcome: ExportOutcome) -> Attempt:
        """Send each chunk in one request, up to ``max_in_flight`` at once; settle what the answers settle. A
        chunk of several events that fails with a kind in the transport's ``halve_on`` is sent again as two
        halves."""
        retry: list[EncodedEvent] = []
        last_failure: BaseException | None = None
        while chunks:
            futures = self._submit(send, chunks)
            chunks = []
            for future, chunk in futures:
                exc = _exception_of(future)
                if exc is None:
                    refused = future.result()
                    self._counters.delivered += len(chunk) - len(refused)
                    last_failure = self._settle_refused(refused, retry, outcome) or last_failure
                    continue
                last_failure = exc
                kind = self._classify(exc)
                if kind in self._transport.halve_on and len(chunk) > 1:
                    middle = len(chunk) // 2
                    chunks += [chunk[:middle], chunk[middle:]]
                    continue
                retry += self._settle_failure(exc, kind, chunk, outcome)
        return Attempt(retry, last_failure)

    def _submit(self, send: Send, chunks: list[list[EncodedEvent]]) -> list[tuple[Future[Refused], list[EncodedEvent]]]:
        with self._pool_lock:
            if not self.stopping.is_set():
                if self._pool is None:
                    # Its workers are created by whichever thread exports first (on the OpenTelemetry route, the
                    # SDK's batch thread): each blocks the process's signals itself.
                    self._pool = ThreadPoolExecutor(
                        self._settings.max_in_flight,
                        thread_name_prefix=THREAD_PREFIX,
                        initializer=block_process_signals,
                    )
                pool = self._pool
                self._counters.calls += len(chunks)
                return [(pool.submit(send, chunk), chunk) for chunk in chunks]
        # Shut down meanwhile: nothing more is sent; these settle as cancelled, i.e. returned as ``retry``.
        return [(_cancelled_future(), chunk) for chunk in chunks]

    def _classify(self, exc: BaseException) -> Failure:
        if self.stopping.is_set() and (
            isinstance(exc, CancelledError) or error_code(exc) in (None, grpc.StatusCode.CANCELLED)
        ):
            return Failure.TRANSIENT  # cut short by close() (cancelled, or the channel closed): not settled
        return classify_error(exc)

    # -- settling ------------------------------------------------------------------------------------------------
    def _settle_refused(
        self, refused: Refused, retry: list[EncodedEvent], outcome: ExportOutcome
    ) -> EntryRefused | None:
        """Settle the entries a bulk publish refused one by one; returns the last transient refusal, if any.

        daprd reports each with the broker's error text. Only those the broker may take later are retried: a
        refused entry must not hold the others for the retry window."""
        transient: EntryRefused | None = None
        for event, error in refused:
            rejected = EntryRefused(error)
            kind = classify_entry_error(error)
            if kind is Failure.TRANSIENT:
                retry.append(event)
                transient = rejected
            else:
                self._fail([event], kind, rejected, outcome)
        return transient

    def _settle_failure(
        self, exc: BaseException, kind: Failure, chunk: list[EncodedEvent], outcome: ExportOutcome
    ) -> list[EncodedEvent]:
        """Settle ``chunk``, whose request failed with ``exc``, according to ``kind``; return what is to be
        retried."""
        if kind is Failure.TRANSIENT:
            return chunk
        if kind is Failure.MISSING_COMPONENT:
            self.sidecar.mark_missing()
            self._drop(chunk, outcome)
            return []
        if kind is Failure.UNAUTHORIZED:
            self._counters.unauthorized += len(chunk)
            provider = self._header_provider
            if isinstance(provider, RefreshableHeaderProvider):
                # A revoked or rotated token: the next attempt asks for a fresh one; the events are not lost.
                provider.invalidate()
                self._log_once(
                    failure_cause(kind, exc),
                    logging.WARNING,
                    "appevents: the endpoint behind Dapr binding %r rejected the token (HTTP 401); a new token is "
                    "requested and the events are retried (further rejections are counted in "
                    "DaprExporter.stats().unauthorized, not logged)",
                    self._transport.component,
                )
                return chunk
        self._fail(chunk, kind, exc, outcome)
        return []

    def _fail(self, events: list[EncodedEvent], kind: Failure, exc: BaseException, outcome: ExportOutcome) -> None:
        """Report ``events`` failed for good (counted, logged once per cause)."""
        reason = failure_reason(kind, exc)
        self._counters.failed += len(events)
        outcome.failed += [(event, reason) for event in events]
        self._log_once(
            failure_cause(kind, exc),
            logging.ERROR,
            "appevents: Dapr refused an event for good (%s; %s); it is reported failed, the others go on "
            "(further errors of this kind are counted, not logged)",
            reason,
            describe_error(exc),
        )

    def _drop(self, events: list[EncodedEvent], outcome: ExportOutcome) -> None:
        """Report ``events`` dropped: the sidecar has no such component."""
        # The warning (once, with a component file to add) is the sidecar's: it knows when the component is back.
        reason = failure_reason(Failure.MISSING_COMPONENT, None)
        self._counters.skipped += len(events)
        outcome.dropped += [(event, reason) for event in events]


def _exception_of(future: Future[Refused]) -> BaseException | None:
    try:
        return future.exception()
    except CancelledError as exc:  # cancelled by close() before it ran
        return exc


def _cancelled_future() -> Future[Refused]:
    future: Future[Refused] = Future()
    future.cancel()
    return future
