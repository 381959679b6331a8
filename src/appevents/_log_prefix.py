"""appevents' log lines say ``appevents: ...`` only where nothing else says where they come from.

Every message of the ``appevents`` loggers starts with ``appevents: `` (or ``appevents bridge: ``), so that a line
printed by Python's last-resort handler — an application that configured no logging sees ``%(message)s`` only —
still names its source. An application that configured logging has a format of its own, which names the logger
(``logging.basicConfig``'s default does); there the prefix would say it twice (``appevents|WARNING|appevents: ...``).
:class:`PrefixOnlyWithoutHandlers` drops it in that case.
"""

from __future__ import annotations

import logging

__all__ = ["APPEVENTS_LOGGERS", "PrefixOnlyWithoutHandlers", "install"]

#: The loggers appevents and its exporters log to (a logger's filters do not apply to its children's records).
APPEVENTS_LOGGERS = ("appevents", "appevents.bridge", "appevents.dapr", "appevents.segment", "appevents.temporal")
_PREFIXES = ("appevents: ", "appevents bridge: ")


class PrefixOnlyWithoutHandlers(logging.Filter):
    """Drops the leading ``appevents: `` of a record's message when a handler will format it (the logger or an
    ancestor has one); keeps it when the record goes to ``logging.lastResort``. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if isinstance(message, str) and message.startswith(_PREFIXES) and logging.getLogger(record.name).hasHandlers():
            record.msg = message.split(": ", 1)[1]
        return True


def install() -> None:
    """Put the filter on :data:`APPEVENTS_LOGGERS` (once: adding the same filter again does nothing)."""
    for name in APPEVENTS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, PrefixOnlyWithoutHandlers) for existing in logger.filters):
            logger.addFilter(PrefixOnlyWithoutHandlers())
