"""``DaprExporter``: an OpenTelemetry log exporter that delivers appevents events to a Dapr sidecar.

It runs on the delivery worker thread (``appevents.delivery.DeliveryProcessor`` or OTel's batch processor),
never on the caller's path. One ``export(batch)`` call:

1. takes the event JSON of each record (records that are not appevents events are ignored);
2. makes sure the sidecar answers and has the component (``get_metadata()`` once, cached; re-asked with
   backoff while missing — events meanwhile are skipped and counted, with one warning);
3. gets the auth headers (one shared token) — binding modes only; without them nothing is sent;
4. sends, per mode: ``binding`` — one ``invoke_binding`` per event, up to ``max_in_flight`` at once;
   ``batch`` — one ``invoke_binding`` per JSON array chunk; ``pubsub`` — ``publish_events`` per topic;
5. retries what failed transiently with jittered exponential backoff, within ``retry_max_elapsed_s``;
   a permanent failure is counted and logged once per cause, and never holds back the other events. An HTTP 401
   from the endpoint behind the binding (a revoked or rotated token) drops the cached token and is retried like a
   transient failure, when the header provider can refresh (:class:`~appevents.auth.RefreshableHeaderProvider`).

``export`` never raises. Counters: :meth:`DaprExporter.stats`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from dapr.clients import DaprClient
from dapr.clients.grpc._request import BulkPublishEntry
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from appevents.auth import AuthError, HeaderProvider, RefreshableHeaderProvider, header_provider_from_settings
from appevents.delivery import LogOnce
from appevents.records import EVENT_ID_ATTRIBUTE, TOPIC_ATTRIBUTE, event_json_from_record
from appevents.settings import AppEventsSettings
from appevents_exporter_dapr.failures import (
    Failure,
    backoff_delay,
    classify_entry_error,
    classify_error,
    error_code,
    error_details,
    failure_cause,
)
from appevents_exporter_dapr.settings import DaprExporterSettings, DaprMode
from appevents_exporter_dapr.sidecar import Sidecar, SidecarNotReady

__all__ = ["DaprExporter", "DaprExporterStats", "create_dapr_exporter"]

_logger = logging.getLogger("appevents.dapr")

_CONTENT_TYPE = "application/json"
#: Entries per bulk publish request.
_PUBSUB_CHUNK = 128


@dataclass(frozen=True)
class DaprExporterStats:
    """Counters of one :class:`DaprExporter` (monotonic, in events unless named otherwise)."""

    delivered: int
    #: Event sends repeated after a transient failure (one event retried three times counts three).
    retried: int
    #: Given up: permanent errors, and transient ones past ``retry_max_elapsed_s``.
    failed: int
    #: Not sent because the sidecar does not have the component.
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


@dataclass(slots=True)
class _Item:
    event_id: str
    #: The event JSON, UTF-8 encoded: what goes on the wire, and what batch sizes are measured in.
    data: bytes
    topic: str | None


class _EntryRejected(Exception):
    """A bulk publish entry the sidecar reported as failed (the broker's error text)."""


@dataclass(slots=True)
class _Outcome:
    """What one attempt did with the items it was given."""

    retry: list[_Item]
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
        self._header_provider = header_provider_from_settings() if header_provider == "env" else header_provider
        self._static_metadata = self.settings.metadata_values()
        self._log_once = LogOnce(_logger)
        kind = "pubsub" if self.mode is DaprMode.PUBSUB else "binding"
        self._sidecar = Sidecar(self.settings, self.settings.component_name(core), kind, self._log_once)
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._delivered = 0
        self._retried = 0
        self._failed = 0
        self._skipped = 0
        self._auth_failures = 0
        self._unauthorized = 0
        self._calls = 0
        self._ignored = 0

    def __repr__(self) -> str:
        target = self.pubsub if self.mode is DaprMode.PUBSUB else f"{self.binding}/{self.operation}"
        return f"DaprExporter(mode={self.mode.value!r}, target={target!r}, auth={self._header_provider!r})"

    # -- LogRecordExporter ---------------------------------------------------------------------------------------
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        items: list[_Item] = []
        for record in batch:
            body = event_json_from_record(record)
            if body is None:
                self._ignored += 1
                continue
            attributes = record.log_record.attributes or {}
            topic = attributes.get(TOPIC_ATTRIBUTE)
            items.append(_Item(str(attributes[EVENT_ID_ATTRIBUTE]), body.encode(), str(topic) if topic else None))
        if not items:
            return LogRecordExportResult.SUCCESS
        failed_before, skipped_before = self._failed, self._skipped
        try:
            self._deliver(items)
        except Exception as exc:  # a bug here must cost events, never the worker thread
            self._failed += len(items)
            self._log_once(
                f"bug:{type(exc).__name__}",
                logging.ERROR,
                "appevents: Dapr exporter error %s: %s; the batch is counted as failed",
                type(exc).__name__,
                exc,
            )
        if self._failed == failed_before and self._skipped == skipped_before:
            return LogRecordExportResult.SUCCESS
        return LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # export() returns only once its batch is settled: nothing is held back here

    def shutdown(self) -> None:
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._sidecar.close()

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
        )

    # -- delivery ------------------------------------------------------------------------------------------------
    def _deliver(self, items: list[_Item]) -> None:
        settings = self.settings
        deadline = time.monotonic() + settings.retry_max_elapsed_s
        pending = items
        attempt = 0
        while pending:
            outcome = self._attempt(pending)
            pending = outcome.retry
            if not pending:
                return
            if self._stopping.is_set() or time.monotonic() >= deadline:
                self._give_up(pending, outcome.failure)
                return
            delay = backoff_delay(attempt, settings.retry_initial_backoff_s, settings.retry_max_backoff_s)
            delay = min(delay, max(0.0, deadline - time.monotonic()))
            if self._stopping.wait(delay):
                self._give_up(pending, outcome.failure)
                return
            attempt += 1
            self._retried += len(pending)

    def _give_up(self, pending: list[_Item], failure: BaseException | None) -> None:
        self._failed += len(pending)
        reason = _describe(failure)
        self._log_once(
            f"gave-up:{failure_cause(Failure.TRANSIENT, failure)}",
            logging.ERROR,
            "appevents: %d event(s) not delivered to Dapr after retrying for up to %.0f s (last error: %s); "
            "counted as failed (further occurrences are counted, not logged)",
            len(pending),
            self.settings.retry_max_elapsed_s,
            reason,
        )

    def _attempt(self, items: list[_Item]) -> _Outcome:
        sidecar = self._sidecar
        try:
            if not sidecar.component_registered():
                self._skipped += len(items)
                return _Outcome([])
            client = sidecar.client()
        except SidecarNotReady as exc:
            return _Outcome(items, exc)
        if self.mode is DaprMode.PUBSUB:
            return self._publish(client, items)
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
            return _Outcome(items, exc)
        if self.mode is DaprMode.BATCH:
            return self._invoke_batches(client, items, metadata)
        return self._invoke_each(client, items, metadata)

    def _binding_metadata(self) -> dict[str, str]:
        metadata = {"Content-Type": _CONTENT_TYPE, **self._static_metadata}
        if self._header_provider is not None:
            metadata.update(self._header_provider.headers())
        return metadata

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.settings.max_in_flight, thread_name_prefix="appevents-dapr")
        return self._pool

    # -- binding: one call per event -----------------------------------------------------------------------------
    def _invoke_each(self, client: DaprClient, items: list[_Item], metadata: dict[str, str]) -> _Outcome:
        def send(data: bytes) -> None:
            client.invoke_binding(self.binding, self.operation, data, metadata)

        pool = self._executor()
        futures = [pool.submit(send, item.data) for item in items]
        self._calls += len(items)
        return self._settle(list(zip(futures, ([item] for item in items), strict=True)))

    # -- batch: one call per JSON array --------------------------------------------------------------------------
    def _invoke_batches(self, client: DaprClient, items: list[_Item], metadata: dict[str, str]) -> _Outcome:
        pool = self._executor()

        def send(chunk: list[_Item]) -> None:
            client.invoke_binding(
                self.binding, self.operation, b"[" + b",".join(i.data for i in chunk) + b"]", metadata
            )

        retry: list[_Item] = []
        last_failure: BaseException | None = None
        chunks = _chunk_by_bytes(items, self.settings.batch_max_bytes)
        while chunks:
            futures = [(pool.submit(send, chunk), chunk) for chunk in chunks]
            self._calls += len(chunks)
            chunks = []
            for future, chunk in futures:
                exc = future.exception()
                if exc is None:
                    self._delivered += len(chunk)
                    continue
                last_failure = exc
                kind = classify_error(exc)
                if kind is Failure.PERMANENT and len(chunk) > 1:
                    # Find the bad event(s) by halving: the rest of the chunk still goes through.
                    middle = len(chunk) // 2
                    chunks += [chunk[:middle], chunk[middle:]]
                    continue
                retry += self._handle_failure(exc, kind, chunk)
        return _Outcome(retry, last_failure)

    # -- pubsub: publish_events per topic ------------------------------------------------------------------------
    def _publish(self, client: DaprClient, items: list[_Item]) -> _Outcome:
        by_topic: dict[str, list[_Item]] = {}
        for item in items:
            by_topic.setdefault(item.topic or self._topic_of(item.data), []).append(item)
        # Several smaller requests in flight: building one overlaps with the sidecar handling another.
        requests = [
            (topic, group[start : start + _PUBSUB_CHUNK])
            for topic, group in by_topic.items()
            for start in range(0, len(group), _PUBSUB_CHUNK)
        ]
        pool = self._executor()
        futures = [(pool.submit(self._publish_chunk, client, topic, chunk), chunk) for topic, chunk in requests]
        self._calls += len(requests)
        retry: list[_Item] = []
        last_failure: BaseException | None = None
        for future, chunk in futures:
            exc = future.exception()
            if exc is not None:
                last_failure = exc
                retry += self._handle_failure(exc, classify_error(exc), chunk)
                continue
            failed = future.result()
            self._delivered += len(chunk) - len(failed)
            # The broker refused some entries; daprd reports them one by one, each with its error text. Only
            # those it may take later are retried: a refused entry must not hold the worker for the retry budget.
            for item, error in failed:
                rejected = _EntryRejected(error)
                kind = classify_entry_error(error)
                if kind is Failure.TRANSIENT:
                    retry.append(item)
                    last_failure = rejected
                else:
                    self._handle_failure(rejected, kind, [item])
        return _Outcome(retry, last_failure)

    def _publish_chunk(self, client: DaprClient, topic: str, chunk: list[_Item]) -> list[tuple[_Item, str]]:
        """Publish ``chunk`` in one bulk request; returns the entries the sidecar reported as failed, with the
        error text of each."""
        entries: list[BulkPublishEntry | bytes | str] = []
        by_entry_id: dict[str, _Item] = {}
        for item in chunk:
            entry_id = item.event_id
            if entry_id in by_entry_id:  # the same event published twice: entry ids must be unique
                entry_id = f"{entry_id}#{len(by_entry_id)}"
            by_entry_id[entry_id] = item
            entries.append(
                BulkPublishEntry(
                    event=item.data,
                    content_type=_CONTENT_TYPE,
                    entry_id=entry_id,
                    # Dapr takes this as the CloudEvent's id instead of generating one.
                    metadata={"cloudevent.id": item.event_id},
                )
            )
        response = client.publish_events(self.pubsub, topic, entries, publish_metadata=self._static_metadata)
        return [(by_entry_id[e.entry_id], e.error) for e in response.failed_entries if e.entry_id in by_entry_id]

    def _topic_of(self, body: str | bytes) -> str:
        """Topic of an event whose record carries no topic attribute (e.g. emitted by an older appevents)."""
        event = json.loads(body)
        return str(event["metadata"].get("topic_name") or self.settings.default_topic or event["event_type"])

    # -- outcomes ------------------------------------------------------------------------------------------------
    def _settle(self, futures: list[tuple[Future[None], list[_Item]]]) -> _Outcome:
        retry: list[_Item] = []
        last_failure: BaseException | None = None
        for future, chunk in futures:
            exc = future.exception()
            if exc is None:
                self._delivered += len(chunk)
                continue
            last_failure = exc
            retry += self._handle_failure(exc, classify_error(exc), chunk)
        return _Outcome(retry, last_failure)

    def _handle_failure(self, exc: BaseException, kind: Failure, chunk: list[_Item]) -> list[_Item]:
        """Count ``chunk`` according to ``kind``; return what is to be retried."""
        if kind is Failure.TRANSIENT:
            return chunk
        if kind is Failure.MISSING_COMPONENT:
            self._skipped += len(chunk)
            self._sidecar.mark_missing()
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
        self._failed += len(chunk)
        reason = _describe(exc)
        self._log_once(
            failure_cause(kind, exc),
            logging.ERROR,
            "appevents: Dapr rejected an event (%s); it is counted as failed, the others go on "
            "(further errors of this kind are counted, not logged)",
            reason,
        )
        return []


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    if isinstance(exc, _EntryRejected):
        return f"bulk publish entry refused: {exc}"[:300]
    code = error_code(exc)
    if code is None:
        return f"{type(exc).__name__}: {exc}"[:300]
    return f"{code.name}: {error_details(exc)}"[:300]


def _chunk_by_bytes(items: list[_Item], max_bytes: int) -> list[list[_Item]]:
    chunks: list[list[_Item]] = []
    current: list[_Item] = []
    size = 2  # the brackets
    for item in items:
        grow = len(item.data) + 1  # bytes, not characters: the sidecar's limit is on the encoded message
        if current and size + grow > max_bytes:
            chunks.append(current)
            current, size = [], 2
        current.append(item)
        size += grow
    if current:
        chunks.append(current)
    return chunks


def create_dapr_exporter(settings: AppEventsSettings) -> DaprExporter:
    """Entry point ``appevents.exporters: dapr``: the exporter configured from ``APPEVENTS_DAPR_*``/``_AUTH_*``."""
    return DaprExporter(DaprExporterSettings(), core_settings=settings)
