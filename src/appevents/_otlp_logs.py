"""The ``otlp`` exporter: the standard OTLP log exporter, plus what OTel's interface does not say — a refused
credential.

``LogRecordExporter.export`` answers SUCCESS or FAILURE for a batch, nothing more, so the engine counts a failed
batch as "not deliverable now" (``unavailable``; in durable mode kept for retry). An endpoint that refuses the
credentials (HTTP 401/403, gRPC ``UNAUTHENTICATED``/``PERMISSION_DENIED``) will refuse them again, and waiting or a
spool does not help: such a batch is counted failed, ``refused:<status>``, with one error line saying which
settings to check. :class:`RefusalAware` watches the answers (a ``requests`` response hook for OTLP/HTTP, a thin
wrapper around the stub for OTLP/gRPC) and tells the engine through ``refusal()``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from appevents._counting import LogOnce

__all__ = ["RefusalAware", "refusal_aware"]

_logger = logging.getLogger("appevents")
_HTTP_REFUSED = frozenset({401, 403})
_GRPC_REFUSED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
_ADVICE = (
    "check the credentials sent: OTEL_EXPORTER_OTLP_(LOGS_)HEADERS (e.g. Authorization=Bearer%20<token>) or the "
    "client certificate (OTEL_EXPORTER_OTLP_(LOGS_)CLIENT_CERTIFICATE / _KEY); `appevents doctor` checks them"
)


class _StubWatch:
    """The OTLP/gRPC stub, with the status code of a failed call kept."""

    def __init__(self, stub: Any, owner: RefusalAware) -> None:
        self._stub = stub
        self._owner = owner

    def Export(self, *args: Any, **kwargs: Any) -> Any:  # the stub's method name
        try:
            return self._stub.Export(*args, **kwargs)
        except Exception as exc:
            code = getattr(exc, "code", None)
            status = code() if callable(code) else None
            self._owner.saw(str(getattr(status, "name", "")))
            raise


class RefusalAware(LogRecordExporter):
    """The standard OTLP log exporter ``inner``; after a FAILURE, :meth:`refusal` says whether the endpoint refused
    the credentials (``refused:401``, ``refused:UNAUTHENTICATED`` …) or None."""

    def __init__(self, inner: LogRecordExporter) -> None:
        #: The standard OTLP log exporter doing the work.
        self.inner = inner
        self._answer = ""
        self._log_once = LogOnce(_logger)

    def saw(self, answer: str) -> None:
        """One answer of the endpoint: an HTTP status (as text) or a gRPC status code name."""
        self._answer = answer

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self._answer = ""
        client = getattr(self.inner, "_client", None)  # OTLP/gRPC: the stub, rebuilt after a reconnect
        if client is not None and hasattr(client, "Export") and not isinstance(client, _StubWatch):
            self.inner._client = _StubWatch(client, self)  # type: ignore[attr-defined]
        return self.inner.export(batch)

    def refusal(self) -> str | None:
        """``refused:<status>`` when the last export failed because the credentials were refused; else None."""
        answer = self._answer
        refused = answer in _GRPC_REFUSED or (answer.isdigit() and int(answer) in _HTTP_REFUSED)
        if not refused:
            return None
        self._log_once(
            f"refused:{answer}",
            logging.ERROR,
            "appevents: the OTLP endpoint refused the credentials (%s); its events are counted failed "
            "(refused:%s), not retried: %s",
            answer,
            answer,
            _ADVICE,
        )
        return f"refused:{answer}"

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return type(self.inner).__name__


def refusal_aware(exporter_class: type[LogRecordExporter], transport: str) -> RefusalAware:
    """Build the OTLP log exporter of ``transport`` (``http`` or ``grpc``) with its answers watched."""
    credential_provider = "OTEL_PYTHON_EXPORTER_OTLP_HTTP_LOGS_CREDENTIAL_PROVIDER"
    if transport != "http" or os.environ.get(credential_provider):  # a session of the user's own: leave it alone
        return RefusalAware(exporter_class())
    import requests

    session = requests.Session()
    exporter: RefusalAware

    def on_response(response: Any, *args: Any, **kwargs: Any) -> None:
        exporter.saw(str(response.status_code))

    session.hooks["response"].append(on_response)
    exporter = RefusalAware(exporter_class(session=session))  # type: ignore[call-arg]
    return exporter
