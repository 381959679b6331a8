"""Events as the rows of a readable table: what ``appevents tail`` and the demo print."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from appevents._models import ApplicationEventNames, Event

__all__ = ["column_widths", "format_row", "table_header", "unreadable_row"]

#: (name, width, narrowest): the columns and their widths on a wide terminal; on a narrower one the flexible
#: columns (narrowest < width) give up space, the ids keeping their end. The narrowest layout is 80 wide.
_COLUMNS = (
    ("time", 12, 12),
    ("type", 24, 10),
    ("name", 14, 11),
    ("state", 16, 9),
    ("workflow", 36, 10),
    ("activity", 24, 8),
    ("id", 8, 8),
)
_SEPARATOR = "  "


def column_widths(total: int | None = None) -> tuple[int, ...]:
    """The widths of the columns for a line of at most ``total`` characters (None: the full widths). Below the
    narrowest layout, that one (the terminal wraps)."""
    widths = [width for _, width, _ in _COLUMNS]
    if total is None:
        return tuple(widths)
    excess = sum(widths) + len(_SEPARATOR) * (len(widths) - 1) - total
    # Take the excess from the widest flexible column first, one character at a time: the layout stays balanced.
    while excess > 0:
        flexible = [i for i, (_, _, narrowest) in enumerate(_COLUMNS) if widths[i] > narrowest]
        if not flexible:
            break
        widest = max(flexible, key=lambda i: widths[i] - _COLUMNS[i][2])
        widths[widest] -= 1
        excess -= 1
    return tuple(widths)


def _printable(text: str) -> str:
    """``text`` with every character that is not printable (ESC, BEL, CR, newlines, bidi overrides …) written as
    its escape (``\\x1b``): a stored event never moves the cursor, recolours or retitles the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _fit(text: str, width: int) -> str:
    # Ids differ at their end (run suffixes, uuids): keep the end.
    text = _printable(text)
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _state(event: Event) -> str:
    """What the STATE column shows: how an attempt ended for ``activity_end`` (its ``data.status``: completed,
    failed, cancelled, timed_out …), else the workflow's state (``workflow_end``: the terminal one)."""
    status = event.data.get("status") if event.event_name == ApplicationEventNames.ACTIVITY_END.value else None
    return status if isinstance(status, str) else event.metadata.workflow_state or "-"


def _moment(event: Event, published_ns: int | None) -> str:
    try:
        if published_ns is not None:
            return datetime.fromtimestamp(published_ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
        if event.metadata.created_timestamp is not None:
            return datetime.fromtimestamp(event.metadata.created_timestamp, UTC).strftime("%H:%M:%S")
    except (OverflowError, OSError, ValueError):  # a time no calendar holds (a crafted or damaged row)
        pass
    return "-"


def format_row(event: Event, published_ns: int | None = None, widths: Sequence[int] | None = None) -> str:
    """One readable line of the table ``tail`` (and the demo) print; see :func:`table_header`."""
    meta = event.metadata
    cells = (
        _moment(event, published_ns),
        event.event_type,
        event.event_name or "-",
        _state(event),
        meta.workflow_id or "-",
        f"{meta.activity_type}#{meta.attempt}" if meta.activity_type else "-",
        event.event_id[:8],
    )
    return _line(cells, widths)


def unreadable_row(seq: int, problem: str, widths: Sequence[int] | None = None) -> str:
    """The line for a stored row that is not a readable event (a damaged or crafted log): said, not raised."""
    return _line(("-", f"<unreadable row {seq}>", "-", "-", _printable(problem), "-", "-"), widths)


def _line(cells: Sequence[str], widths: Sequence[int] | None) -> str:
    widths = widths if widths is not None else column_widths()
    line = _SEPARATOR.join(f"{_fit(cell, width):<{width}}" for cell, width in zip(cells, widths, strict=True))
    return line.rstrip()


def table_header(widths: Sequence[int] | None = None) -> str:
    widths = widths if widths is not None else column_widths()
    return _line([name.upper() for name, _, _ in _COLUMNS], widths)
