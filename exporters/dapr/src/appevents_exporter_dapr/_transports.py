"""The three ways events travel to the sidecar (``APPEVENTS_DAPR_MODE``), one small strategy each.

A transport cuts a batch into chunks, one request each, and sends a chunk; it knows nothing of retries, threads,
counters or failures beyond which kinds make it split a chunk (:attr:`Transport.halve_on`). Those are shared by all
three: the retry window in :mod:`appevents_exporter_dapr._exporter`, sending and settling in
:mod:`appevents_exporter_dapr._dispatch`. Event JSON is sent as it is, never parsed (except to find the topic of a
record appevents did not emit).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Protocol

from dapr.clients import DaprClient
from dapr.clients.grpc._request import BulkPublishEntry

from appevents.exporting import EncodedEvent
from appevents_exporter_dapr._failures import Failure
from appevents_exporter_dapr._settings import DaprExporterSettings, DaprMode

__all__ = [
    "BatchTransport",
    "BindingTransport",
    "PubsubTransport",
    "Refused",
    "Send",
    "Transport",
    "chunk_by_bytes",
    "event_topic",
    "json_topic",
    "transport_for",
]

CONTENT_TYPE = "application/json"
#: Entries per bulk publish request.
PUBSUB_CHUNK = 128

#: Events of a chunk the sidecar refused one by one (a bulk publish's failed entries), with the error text of each.
Refused = list[tuple[EncodedEvent, str]]
#: One request to the sidecar carrying a chunk; raises what the call raised, returns what it refused one by one.
Send = Callable[[list[EncodedEvent]], Refused]


class Transport(Protocol):
    """How a batch of events becomes requests to the sidecar. Chosen once, at construction, from the mode."""

    #: The kind of component the sidecar must have (``binding`` or ``pubsub``) and its name.
    kind: str
    component: str
    #: What ``repr`` shows: ``binding/operation`` or the pub/sub name.
    target: str
    #: Whether calls carry the auth headers (binding metadata); without them nothing is sent.
    uses_auth: bool
    #: Failure kinds after which a chunk of several events is sent again as two halves, to isolate the culprit.
    halve_on: frozenset[Failure]

    def chunks(self, events: list[EncodedEvent]) -> list[list[EncodedEvent]]:
        """``events`` cut into the chunks sent one request each."""
        ...

    def sender(self, client: DaprClient, headers: Mapping[str, str]) -> Send:
        """The request of one attempt: sends a chunk through ``client`` with ``headers`` (empty without auth)."""
        ...


class BindingTransport:
    """``binding``: one ``invoke_binding`` per event, ``data`` the event JSON (the Atlan application-sdk
    ``EventStore`` wire contract). Metadata: ``Content-Type``, ``APPEVENTS_DAPR_METADATA`` and the auth headers."""

    kind = "binding"
    uses_auth = True
    halve_on: frozenset[Failure] = frozenset()

    def __init__(self, settings: DaprExporterSettings) -> None:
        self.component = settings.binding
        self.target = f"{settings.binding}/{settings.operation}"
        self._operation = settings.operation
        self._static_metadata = settings.metadata_values()

    def chunks(self, events: list[EncodedEvent]) -> list[list[EncodedEvent]]:
        return [[event] for event in events]

    def sender(self, client: DaprClient, headers: Mapping[str, str]) -> Send:
        metadata = {"Content-Type": CONTENT_TYPE, **self._static_metadata, **headers}

        def send(chunk: list[EncodedEvent]) -> Refused:
            client.invoke_binding(self.component, self._operation, self._data(chunk), metadata)
            return []

        return send

    def _data(self, chunk: list[EncodedEvent]) -> bytes:
        return chunk[0].body


class BatchTransport(BindingTransport):
    """``batch``: one ``invoke_binding`` per chunk, ``data`` a JSON array of its events, chunks up to
    ``batch_max_bytes``. A refused array is halved to find the bad event(s): the rest of it still goes through."""

    halve_on: frozenset[Failure] = frozenset({Failure.PERMANENT, Failure.TOO_LARGE})

    def __init__(self, settings: DaprExporterSettings) -> None:
        super().__init__(settings)
        self._max_bytes = settings.batch_max_bytes

    def chunks(self, events: list[EncodedEvent]) -> list[list[EncodedEvent]]:
        return chunk_by_bytes(events, self._max_bytes)

    def _data(self, chunk: list[EncodedEvent]) -> bytes:
        return b"[" + b",".join(event.body for event in chunk) + b"]"


class PubsubTransport:
    """``pubsub``: ``publish_events`` (bulk) per topic, up to :data:`PUBSUB_CHUNK` entries a request; entry id and
    CloudEvent id = event id. Entries are counted, not sized: a request too large for the sidecar is halved."""

    kind = "pubsub"
    uses_auth = False
    halve_on: frozenset[Failure] = frozenset({Failure.TOO_LARGE})

    def __init__(self, settings: DaprExporterSettings) -> None:
        self.component = self.target = settings.pubsub
        self._default_topic = settings.default_topic
        self._static_metadata = settings.metadata_values()

    def chunks(self, events: list[EncodedEvent]) -> list[list[EncodedEvent]]:
        by_topic: dict[str, list[EncodedEvent]] = {}
        for event in events:
            by_topic.setdefault(event_topic(event, self._default_topic), []).append(event)
        # Several smaller requests in flight: building one overlaps with the sidecar handling another.
        return [
            group[start : start + PUBSUB_CHUNK]
            for group in by_topic.values()
            for start in range(0, len(group), PUBSUB_CHUNK)
        ]

    def sender(self, client: DaprClient, headers: Mapping[str, str]) -> Send:
        return lambda chunk: self._publish(client, chunk)

    def _publish(self, client: DaprClient, chunk: list[EncodedEvent]) -> Refused:
        """Publish ``chunk`` in one bulk request; returns the entries the sidecar reported as failed."""
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
                    content_type=CONTENT_TYPE,
                    entry_id=entry_id,
                    # Dapr takes this as the CloudEvent's id instead of generating one.
                    metadata={"cloudevent.id": event.event_id},
                )
            )
        topic = event_topic(chunk[0], self._default_topic)
        response = client.publish_events(self.component, topic, entries, publish_metadata=self._static_metadata)
        return [(by_entry_id[e.entry_id], e.error) for e in response.failed_entries if e.entry_id in by_entry_id]


def transport_for(settings: DaprExporterSettings) -> Transport:
    if settings.mode is DaprMode.PUBSUB:
        return PubsubTransport(settings)
    if settings.mode is DaprMode.BATCH:
        return BatchTransport(settings)
    return BindingTransport(settings)


def event_topic(event: EncodedEvent, default_topic: str | None) -> str:
    """The event's topic attribute; without one (``metadata.topic_name`` unset) the default topic, else the event
    type. The JSON is parsed only for a record that names no event type (not one appevents emitted)."""
    return event.topic or default_topic or event.event_type or json_topic(event.body, default_topic)


def json_topic(body: str | bytes, default_topic: str | None) -> str:
    """Topic of an event known by its JSON only."""
    event = json.loads(body)
    return str(event["metadata"].get("topic_name") or default_topic or event["event_type"])


def chunk_by_bytes(events: list[EncodedEvent], max_bytes: int) -> list[list[EncodedEvent]]:
    """``events`` in order, cut into JSON arrays of at most ``max_bytes`` (a single larger event is alone)."""
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
