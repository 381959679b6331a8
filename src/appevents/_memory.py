"""In-memory destinations: :class:`CapturedEvents` (a processor, sees events as they are emitted) and
:class:`InMemoryEventExporter` (the ``memory`` exporter, after the delivery queue). For tests and demos.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from appevents._encoded import EncodedEvent, ExportOutcome
from appevents._event_store import EventStore
from appevents._models import Event
from appevents._records import encoded_from_record, event_from_json, event_from_record
from appevents._settings import AppEventsSettings

__all__ = ["CapturedEvents", "InMemoryEventExporter", "create_memory_exporter"]


class CapturedEvents(LogRecordProcessor):
    """A log record processor that keeps every published event in memory, in order."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        event = event_from_record(log_record)
        if event is not None:
            with self._lock:
                self._events.append(event)

    @property
    def events(self) -> list[Event]:
        """Everything published so far (waits until the pipeline has handed over what is in flight)."""
        EventStore.flush_sync(10)
        with self._lock:
            return list(self._events)

    def of_type(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.event_type == event_type]

    def named(self, event_name: str) -> list[Event]:
        return [e for e in self.events if e.event_name == event_name]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __getitem__(self, index: int) -> Event:
        return self.events[index]

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class InMemoryEventExporter(LogRecordExporter):
    """``memory`` exporter: keeps exported events (after the delivery engine) in a list, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        # Parsed back into events for assertions: this exporter is for tests and demos, not the hot path.
        events = [event_from_json(event.body) for event in batch]
        with self._lock:
            self.events.extend(events)
        return ExportOutcome()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        events = [e for e in (encoded_from_record(r) for r in batch) if e is not None]
        self.export_events(events)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def create_memory_exporter(settings: AppEventsSettings) -> InMemoryEventExporter:
    """``memory``: events kept in this process (tests, and tools that read them back)."""
    return InMemoryEventExporter()
