"""Events as the rows of a readable table: what ``appevents tail`` and the demo print."""

from __future__ import annotations

from datetime import UTC, datetime

from appevents._models import Event

__all__ = ["format_row", "table_header"]

_COLUMNS = (("time", 12), ("type", 24), ("name", 14), ("state", 16), ("workflow id", 36), ("activity", 24), ("id", 8))


def _fit(text: str, width: int) -> str:
    # Ids differ at their end (run suffixes, uuids): keep the end.
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def format_row(event: Event, published_ns: int | None = None) -> str:
    """One readable line of the table ``tail`` (and the demo) print; see :func:`table_header`."""
    if published_ns is not None:
        moment = datetime.fromtimestamp(published_ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
    elif event.metadata.created_timestamp is not None:
        moment = datetime.fromtimestamp(event.metadata.created_timestamp, UTC).strftime("%H:%M:%S")
    else:
        moment = "-"
    meta = event.metadata
    cells = (
        moment,
        event.event_type,
        event.event_name or "-",
        meta.workflow_state or "-",
        meta.workflow_id or "-",
        f"{meta.activity_type}#{meta.attempt}" if meta.activity_type else "-",
        event.event_id[:8],
    )
    return "  ".join(f"{_fit(cell, width):<{width}}" for cell, (_, width) in zip(cells, _COLUMNS, strict=True))


def table_header() -> str:
    return "  ".join(f"{name.upper():<{width}}" for name, width in _COLUMNS)
