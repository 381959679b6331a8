"""``DaprExporter``: delivers appevents events to a Dapr sidecar, from the exporter's own thread.

It implements the engine's encoded path, :class:`~appevents.exporting.EventExporter`; its OpenTelemetry ``export``
(``OTEL_LOGS_EXPORTER=appevents_dapr``) is a thin adapter over it. One ``export_events(batch)`` call:

1. makes sure the sidecar answers and has the component (``get_metadata()`` once, cached; re-asked with backoff
   while missing — events meanwhile are dropped as ``no_component``, with one warning);
2. gets the auth headers (one shared token) — binding modes only; without them nothing is sent;
3. sends each event's JSON as it is (never parsed), per mode: ``binding`` — one ``invoke_binding`` per event, up
   to ``max_in_flight`` at once; ``batch`` — one per JSON array chunk; ``pubsub`` — ``publish_events`` per topic;
4. retries transient failures with jittered exponential backoff within ``retry_max_elapsed_s``; what is still
   unsettled then, or when ``shutdown()`` is called, is returned as ``retry``. A permanent refusal fails that event
   only (``refused:<gRPC code>``, ``too_large``, ``unauthorized``), logged once per cause; a refused JSON array,
   or a bulk publish too large for the sidecar, is halved until the culprit is alone. An HTTP 401 from the
   endpoint behind the binding drops the cached token and is retried, when the header provider can refresh.

``export_events`` answers per event (:class:`~appevents.exporting.ExportOutcome`) and never raises; counters:
:meth:`DaprExporter.stats`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import grpc
from dapr.clients import DaprClient
from dapr.clients.grpc._request import BulkPublishEntry
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from appevents.auth import (
    AuthError,
    AuthSettings,
    HeaderProvider,
    RefreshableHeaderProvider,
    header_provider_from_settings,
)
from appevents.delivery import LogOnce
from appevents.exporting import Check, EncodedEvent, ExportOutcome
from appevents.records import encoded_from_record
from appevents.settings import AppEventsSettings
from appevents_exporter_dapr.diagnose import diagnose_dapr
from appevents_exporter_dapr.failures import (
    EntryRefused,
    Failure,
    backoff_delay,
    classify_entry_error,
    classify_error,
    error_code,
    error_details,
    failure_cause,
    failure_reason,
)
from appevents_exporter_dapr.settings import DaprExporterSettings, DaprMode
from appevents_exporter_dapr.sidecar import Sidecar, SidecarNotReady

__all__ = ["DaprExporter", "DaprExporterStats", "create_dapr_exporter"]

_logger = logging.getLogger("appevents.dapr")

_CONTENT_TYPE = "application/json"
#: Entries per bulk publish request.
_PUBSUB_CHUNK = 128
_THREAD_PREFIX = "appevents-dapr"

#: One request to the sidecar carrying ``chunk``; returns the events it refused one by one, with the error text.
_Send = Callable[[list[EncodedEvent]], list[tuple[EncodedEvent, str]]]


@dataclass(frozen=True)
class DaprExporterStats:
    """Counters of one :class:`DaprExporter` (monotonic, in events unless named otherwise). ``delivered``,
    ``failed``, ``skipped_no_component`` and ``returned`` add up to the events ``export_events`` answered for."""

    delivered: int
    #: Event sends repeated after a transient failure (one event retried three times counts three).
    retried: int
    #: Refused for good (the outcome's ``failed``): permanent errors, never retried.
    failed: int
    #: Not sent because the sidecar does not have the component (the outcome's ``dropped``).
    skipped_no_component: int
    #: Times no auth headers could be had (token endpoint down or rejecting the credentials).
    auth_failures: int
    #: Event sends the destination behind the binding rejected with HTTP 401 (retried with a fresh token when the
    #: header provider can refresh; counted once per send, so one event may count several times).
    unauthorized: int
    #: Calls made to the sidecar (invoke_binding / publish_events).
    calls: int
    #: Log records that carried no appevents event (the exporter shares a LoggerProvider).
    ignored_records: int
    #: Returned unsettled (the outcome's ``retry``): still failing transiently when ``retry_max_elapsed_s`` ran
    #: out, or when ``shutdown()`` was called. The engine may offer the same events again.
    returned: int = 0


@dataclass(slots=True)
class _Run:
    """One ``export_events`` call: what is answered so far, and what is not settled yet."""

    pending: list[EncodedEvent]
    outcome: ExportOutcome = field(default_factory=ExportOutcome)


@dataclass(slots=True)
class _Attempt:
    """What one attempt left to retry, and the last error seen."""

    retry: list[EncodedEvent]
    failure: BaseException | None = None


class DaprExporter(LogRecordExporter):
    """Deliver appevents events to Dapr. Constructible with no arguments (settings from the environment).

    ``header_provider``: where auth headers come from — ``"env"`` (default) builds the OAuth2 client-credentials
    provider from ``APPEVENTS_AUTH_*`` (None when unset); pass any :class:`~appevents.auth.HeaderProvider`, or
    None for no auth. Construction does no I/O: the Dapr client is created on the first export.
    """

    def __init__(
        self,
        settings: DaprExporterSettings | None = None,
        *,
        core_settings: AppEventsSettings | None = None,
        header_provider: HeaderProvider | Literal["env"] | None = "env",
    ) -> None:
        self.settings = settings if settings is not None else DaprExporterSettings()
        core = core_settings if core_settings is not None else AppEventsSettings()
        self.mode = self.settings.mode
        self.binding = self.settings.binding_name(core)
        self.operation = self.settings.binding_operation(core)
        self.pubsub = self.settings.pubsub
        #: The OAuth2 settings read from the environment (``header_provider="env"``), for :meth:`diagnose`.
        self._auth_settings = AuthSettings() if header_provider == "env" else None
        self._header_provider = (
            header_provider_from_settings(self._auth_settings) if header_provider == "env" else header_provider
        )
        self._static_metadata = self.settings.metadata_values()
        self._log_once = LogOnce(_logger)
        kind = "pubsub" if self.mode is DaprMode.PUBSUB else "binding"
        self._sidecar = Sidecar(self.settings, self.settings.component_name(core), kind, self._log_once)
        self._pool: ThreadPoolExecutor | None = None
        #: Guards the pool against ``shutdown()`` from another thread: nothing is submitted once stopping.
        self._pool_lock = threading.Lock()
        self._stopping = threading.Event()
        self._delivered = 0
        self._retried = 0
        self._failed = 0
        self._skipped = 0
        self._returned = 0
        self._auth_failures = 0
        self._unauthorized = 0
        self._calls = 0
        self._ignored = 0

    def __repr__(self) -> str:
        target = self.pubsub if self.mode is DaprMode.PUBSUB else f"{self.binding}/{self.operation}"
        return f"DaprExporter(mode={self.mode.value!r}, target={target!r}, auth={self._header_provider!r})"

    # -- EventExporter -------------------------------------------------------------------------------------------
    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        """Send ``batch``; returns what became of each event (delivered: not listed). Never raises."""
        run = _Run(list(batch))
        if not run.pending:
            return run.outcome
        try:
            self._deliver(run)
        except Exception as exc:  # a bug here must cost events, never the engine's thread
            self._fail_after_bug(run, exc)
        return run.outcome

    # -- LogRecordExporter ---------------------------------------------------------------------------------------
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        events: list[EncodedEvent] = []
        for record in batch:
            event = encoded_from_record(record)
            if event is None:
                self._ignored += 1
            else:
                events.append(event)
        outcome = self.export_events(events)
        if outcome.failed or outcome.dropped or outcome.retry:
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # export() returns only once its batch is settled: nothing is held back here

    def shutdown(self) -> None:
        """Stop: an ``export_events`` running on another thread returns promptly (its unsettled events as
        ``retry``), and every thread this exporter started has ended when this returns. Idempotent."""
        with self._pool_lock:
            self._stopping.set()
            pool, self._pool = self._pool, None
        self._sidecar.close()  # first: calls in flight end now (CANCELLED) instead of at their deadline
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def diagnose(self, timeout_s: float) -> list[Check]:
        """``appevents doctor``'s checks for this exporter (see :mod:`appevents_exporter_dapr.diagnose`): the sidecar
        answers, lists its components, has this exporter's component; the token endpoint issues a token. Each step
        bounded by ``timeout_s``; nothing is sent to the component; independent of this exporter's own client."""
        kind = "pubsub" if self.mode is DaprMode.PUBSUB else "binding"
        return diagnose_dapr(
            component=self._sidecar.component,
            kind=kind,
            auth=self._auth_settings,
            custom_auth=self._auth_settings is None and self._header_provider is not None,
            timeout_s=timeout_s,
        )

    def stats(self) -> DaprExporterStats:
        return DaprExporterStats(
            delivered=self._delivered,
            retried=self._retried,
            failed=self._failed,
            skipped_no_component=self._skipped,
            auth_failures=self._auth_failures,
            unauthorized=self._unauthorized,
            calls=self._calls,
            ignored_records=self._ignored,
            returned=self._returned,
        )

    # -- delivery ------------------------------------------------------------------------------------------------
    def _deliver(self, run: _Run) -> None:
        settings = self.settings
        started = time.monotonic()
        deadline = started + settings.retry_max_elapsed_s
        failure: BaseException | None = None
        attempt = 0
        while not self._stopping.is_set():
            result = self._attempt(run.pending, run.outcome)
            run.pending, failure = result.retry, result.failure
            if not run.pending:
                return
            if time.monotonic() >= deadline:
                break
            delay = backoff_delay(attempt, settings.retry_initial_backoff_s, settings.retry_max_backoff_s)
            if self._stopping.wait(min(delay, max(0.0, deadline - time.monotonic()))):
                break
            attempt += 1
            self._retried += len(run.pending)
        self._return_unsettled(run, failure, time.monotonic() - started)

    def _return_unsettled(self, run: _Run, failure: BaseException | None, elapsed_s: float) -> None:
        pending = run.pending
        self._returned += len(pending)
        run.outcome.retry.extend(pending)
        last_error = _describe(failure)
        # The engine logs this once per cause (and keeps or counts the events): the reason carries what it says.
        if self._stopping.is_set():
            run.outcome.retry_reason = "exporter shut down" + (f" (last error: {last_error})" if failure else "")
            return
        run.outcome.retry_reason = (
            f"{last_error}; after retrying for {elapsed_s:.1f} s, the retry window "
            f"(APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S={self.settings.retry_max_elapsed_s:g})"
        )

    def _fail_after_bug(self, run: _Run, exc: Exception) -> None:
        outcome = run.outcome
        answered = {id(e) for e, _ in outcome.failed} | {id(e) for e, _ in outcome.dropped}
        answered |= {id(e) for e in outcome.retry}
        unanswered = [e for e in run.pending if id(e) not in answered]
        reason = f"bug:{type(exc).__name__}"
        self._failed += len(unanswered)
        outcome.failed += [(e, reason) for e in unanswered]
        self._log_once(
            reason,
            logging.ERROR,
            "appevents: Dapr exporter error %s: %s; the events not settled yet are counted as failed",
            type(exc).__name__,
            exc,
        )

    def _attempt(self, events: list[EncodedEvent], outcome: ExportOutcome) -> _Attempt:
        sidecar = self._sidecar
        try:
            if not sidecar.component_registered():
                self._drop(events, outcome)
                return _Attempt([])
            client = sidecar.client()
        except SidecarNotReady as exc:
            return _Attempt(events, exc)
        if self.mode is DaprMode.PUBSUB:
            return self._publish(client, events, outcome)
        try:
            metadata = self._binding_metadata()
        except AuthError as exc:
            self._auth_failures += 1
            self._log_once(
                f"auth:{exc.status}",
                logging.ERROR,
                "appevents: no auth token for the Dapr binding, events wait and are retried: %s",
                exc,
            )
            return _Attempt(events, exc)
        if self.mode is DaprMode.BATCH:
            return self._invoke_batches(client, events, metadata, outcome)
        return self._invoke_each(client, events, metadata, outcome)

    def _binding_metadata(self) -> dict[str, str]:
        metadata = {"Content-Type": _CONTENT_TYPE, **self._static_metadata}
        if self._header_provider is not None:
            metadata.update(self._header_provider.headers())
        return metadata

    # -- binding: one call per event -----------------------------------------------------------------------------
    def _invoke_each(
        self, client: DaprClient, events: list[EncodedEvent], metadata: dict[str, str], outcome: ExportOutcome
    ) -> _Attempt:
        def send(chunk: list[EncodedEvent]) -> list[tuple[EncodedEvent, str]]:
            client.invoke_binding(self.binding, self.operation, chunk[0].body, metadata)
            return []

        return self._send(send, [[event] for event in events], outcome, halve=frozenset())

    # -- batch: one call per JSON array --------------------------------------------------------------------------
    def _invoke_batches(
        self, client: DaprClient, events: list[EncodedEvent], metadata: dict[str, str], outcome: ExportOutcome
    ) -> _Attempt:
        def send(chunk: list[EncodedEvent]) -> list[tuple[EncodedEvent, str]]:
            data = b"[" + b",".join(e.body for e in chunk) + b"]"
            client.invoke_binding(self.binding, self.operation, data, metadata)
            return []

        chunks = _chunk_by_bytes(events, self.settings.batch_max_bytes)
        # A refused array is halved to find the bad event(s): the rest of the array still goes through.
        return self._send(send, chunks, outcome, halve=frozenset({Failure.PERMANENT, Failure.TOO_LARGE}))

    # -- pubsub: publish_events per topic ------------------------------------------------------------------------
    def _publish(self, client: DaprClient, events: list[EncodedEvent], outcome: ExportOutcome) -> _Attempt:
        by_topic: dict[str, list[EncodedEvent]] = {}
        for event in events:
            by_topic.setdefault(self._topic(event), []).append(event)
        # Several smaller requests in flight: building one overlaps with the sidecar handling another.
        chunks = [
            group[start : start + _PUBSUB_CHUNK]
            for group in by_topic.values()
            for start in range(0, len(group), _PUBSUB_CHUNK)
        ]

        def send(chunk: list[EncodedEvent]) -> list[tuple[EncodedEvent, str]]:
            return self._publish_chunk(client, self._topic(chunk[0]), chunk)

        # Entries are counted, not sized: a request too large for the sidecar is halved until it fits.
        return self._send(send, chunks, outcome, halve=frozenset({Failure.TOO_LARGE}))

    def _publish_chunk(
        self, client: DaprClient, topic: str, chunk: list[EncodedEvent]
    ) -> list[tuple[EncodedEvent, str]]:
        """Publish ``chunk`` in one bulk request; returns the entries the sidecar reported as failed, with the
        error text of each."""
        entries: list[BulkPublishEntry | bytes | str] = []
        by_entry_id: dict[str, EncodedEvent] = {}
        for event in chunk:
            entry_id = event.event_id
            if entry_id in by_entry_id:  # the same event published twice: entry ids must be unique
                entry_id = f"{entry_id}#{len(by_entry_id)}"
            by_entry_id[entry_id] = event
            entries.append(
                BulkPublishEntry(
                    event=event.body,
                    content_type=_CONTENT_TYPE,
                    entry_id=entry_id,
                    # Dapr takes this as the CloudEvent's id instead of generating one.
                    metadata={"cloudevent.id": event.event_id},
                )
            )
        response = client.publish_events(self.pubsub, topic, entries, publish_metadata=self._static_metadata)
        return [(by_entry_id[e.entry_id], e.error) for e in response.failed_entries if e.entry_id in by_entry_id]

    def _topic(self, event: EncodedEvent) -> str:
        """The event's topic attribute; without one (``metadata.topic_name`` unset) the default topic, else the
        event type. The JSON is parsed only for a record that names no event type (not one appevents emitted)."""
        return event.topic or self.settings.default_topic or event.event_type or self._topic_of(event.body)

    def _topic_of(self, body: str | bytes) -> str:
        """Topic of an event known by its JSON only."""
        event = json.loads(body)
        return str(event["metadata"].get("topic_name") or self.settings.default_topic or event["event_type"])

    # -- sending and settling ------------------------------------------------------------------------------------
    def _send(
        self, send: _Send, chunks: list[list[EncodedEvent]], outcome: ExportOutcome, halve: frozenset[Failure]
    ) -> _Attempt:
        """Send each chunk in one request, up to ``max_in_flight`` at once; settle what the answers settle. A
        chunk of several events that fails with a kind in ``halve`` is sent again as two halves."""
        retry: list[EncodedEvent] = []
        last_failure: BaseException | None = None
        while chunks:
            futures = self._submit(send, chunks)
            chunks = []
            for future, chunk in futures:
                exc = _exception_of(future)
                if exc is None:
                    refused = future.result()
                    self._delivered += len(chunk) - len(refused)
                    # daprd reports the entries a broker refused one by one, each with its error text. Only those
                    # it may take later are retried: a refused entry must not hold the others for the retry window.
                    for event, error in refused:
                        rejected = EntryRefused(error)
                        kind = classify_entry_error(error)
                        if kind is Failure.TRANSIENT:
                            retry.append(event)
                            last_failure = rejected
                        else:
                            self._fail([event], kind, rejected, outcome)
                    continue
                last_failure = exc
                kind = self._classify(exc)
                if kind in halve and len(chunk) > 1:
                    middle = len(chunk) // 2
                    chunks += [chunk[:middle], chunk[middle:]]
                    continue
                retry += self._handle_failure(exc, kind, chunk, outcome)
        return _Attempt(retry, last_failure)

    def _submit(
        self, send: _Send, chunks: list[list[EncodedEvent]]
    ) -> list[tuple[Future[list[tuple[EncodedEvent, str]]], list[EncodedEvent]]]:
        with self._pool_lock:
            if not self._stopping.is_set():
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.settings.max_in_flight, thread_name_prefix=_THREAD_PREFIX)
                pool = self._pool
                self._calls += len(chunks)
                return [(pool.submit(send, chunk), chunk) for chunk in chunks]
        # Shut down meanwhile: nothing more is sent; these settle as cancelled, i.e. returned as ``retry``.
        return [(_cancelled_future(), chunk) for chunk in chunks]

    def _classify(self, exc: BaseException) -> Failure:
        if self._stopping.is_set() and (
            isinstance(exc, CancelledError) or error_code(exc) in (None, grpc.StatusCode.CANCELLED)
        ):
            return Failure.TRANSIENT  # cut short by shutdown() (cancelled, or the channel closed): not settled
        return classify_error(exc)

    def _handle_failure(
        self, exc: BaseException, kind: Failure, chunk: list[EncodedEvent], outcome: ExportOutcome
    ) -> list[EncodedEvent]:
        """Settle ``chunk`` according to ``kind``; return what is to be retried."""
        if kind is Failure.TRANSIENT:
            return chunk
        if kind is Failure.MISSING_COMPONENT:
            self._sidecar.mark_missing()
            self._drop(chunk, outcome)
            return []
        if kind is Failure.UNAUTHORIZED:
            self._unauthorized += len(chunk)
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
                    self.binding,
                )
                return chunk
        self._fail(chunk, kind, exc, outcome)
        return []

    def _fail(self, events: list[EncodedEvent], kind: Failure, exc: BaseException, outcome: ExportOutcome) -> None:
        reason = failure_reason(kind, exc)
        self._failed += len(events)
        outcome.failed += [(event, reason) for event in events]
        self._log_once(
            failure_cause(kind, exc),
            logging.ERROR,
            "appevents: Dapr refused an event for good (%s; %s); it is reported failed, the others go on "
            "(further errors of this kind are counted, not logged)",
            reason,
            _describe(exc),
        )

    def _drop(self, events: list[EncodedEvent], outcome: ExportOutcome) -> None:
        # The warning (once, with a component file to add) is the sidecar's: it knows when the component is back.
        reason = failure_reason(Failure.MISSING_COMPONENT, None)
        self._skipped += len(events)
        outcome.dropped += [(event, reason) for event in events]


def _exception_of(future: Future[list[tuple[EncodedEvent, str]]]) -> BaseException | None:
    try:
        return future.exception()
    except CancelledError as exc:  # cancelled by shutdown() before it ran
        return exc


def _cancelled_future() -> Future[list[tuple[EncodedEvent, str]]]:
    future: Future[list[tuple[EncodedEvent, str]]] = Future()
    future.cancel()
    return future


def _describe(exc: BaseException | None) -> str:
    """One line about ``exc`` for logs and ``retry_reason``: the gRPC code and details, or the exception type and
    message (never headers or tokens: those are not part of either)."""
    if exc is None:
        text = "unknown"
    elif isinstance(exc, EntryRefused):
        text = f"bulk publish entry refused: {exc}"
    elif (code := error_code(exc)) is not None:
        text = f"{code.name}: {error_details(exc)}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())[:300]


def _chunk_by_bytes(events: list[EncodedEvent], max_bytes: int) -> list[list[EncodedEvent]]:
    chunks: list[list[EncodedEvent]] = []
    current: list[EncodedEvent] = []
    size = 2  # the brackets
    for event in events:
        grow = len(event.body) + 1  # bytes, not characters: the sidecar's limit is on the encoded message
        if current and size + grow > max_bytes:
            chunks.append(current)
            current, size = [], 2
        current.append(event)
        size += grow
    if current:
        chunks.append(current)
    return chunks


def create_dapr_exporter(settings: AppEventsSettings) -> DaprExporter:
    """Entry point ``appevents.exporters: dapr``: the exporter configured from ``APPEVENTS_DAPR_*``/``_AUTH_*``."""
    return DaprExporter(DaprExporterSettings(), core_settings=settings)
