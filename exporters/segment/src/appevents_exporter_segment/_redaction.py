"""Keep the write key out of the ``segment`` library's log output.

``segment.analytics`` logs the whole request body at DEBUG (``making request: {...}``), and its ``post()`` puts
``"writeKey": "<key>"`` into that body, so anyone running with DEBUG logging would print the key. A filter on the
``segment`` logger (the only logger the library uses) rewrites such records before any handler sees them: the key,
and its base64 ``Authorization`` form, become ``**********``.
"""

from __future__ import annotations

import base64
import logging

__all__ = ["REDACTED", "SEGMENT_LOGGER_NAME", "SecretRedactingFilter", "redact"]

REDACTED = "**********"
SEGMENT_LOGGER_NAME = "segment"


def _forms(secret: str) -> tuple[str, ...]:
    encoded = base64.b64encode(f"{secret}:".encode()).decode()
    return (secret, encoded)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every occurrence of each secret replaced by :data:`REDACTED`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class SecretRedactingFilter(logging.Filter):
    """A logging filter that removes one write key (plain and Basic-auth encoded) from records it sees."""

    def __init__(self, write_key: str) -> None:
        super().__init__()
        self.secrets = _forms(write_key)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # malformed (msg % args fails): keep the template, drop the arguments that may hold the key
            message = f"{record.msg} (log arguments withheld)"
            record.msg, record.args = message, None
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            # Only rewritten records lose their template/arguments split; the rest pass through untouched.
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Format the traceback now, redacted, so handlers use this text instead of formatting it themselves.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({REDACTED})"
