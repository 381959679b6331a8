"""One OTLP logs export, whatever the transport: authenticate, decode, deliver, answer.

The transports (:mod:`._http`, :mod:`._grpc`) only map a :class:`Reply` onto their status codes:

=================  ===========  =====================  ==========================================================
reply              HTTP         gRPC                   when
=================  ===========  =====================  ==========================================================
``OK``             200          OK                     taken (``partial_success`` lists events refused for good)
``UNAUTHORIZED``   401          UNAUTHENTICATED        a token is set and the request does not carry it
``TOO_LARGE``      413          RESOURCE_EXHAUSTED     over ``APPEVENTS_BRIDGE_MAX_BODY_BYTES``
``BAD_REQUEST``    400          INVALID_ARGUMENT       not an OTLP logs request
``BUSY``           429          RESOURCE_EXHAUSTED     no room (retry hint: ``Retry-After`` / ``RetryInfo``)
``UNAVAILABLE``    503          UNAVAILABLE            shutting down, or a passing delivery failure (retry hint)
=================  ===========  =====================  ==========================================================
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from pydantic import SecretStr

from appevents._counting import LogOnce
from appevents.bridge._decode import decode_events
from appevents.bridge._intake import Intake, Verdict
from appevents.bridge._metrics import BridgeInstruments, bridge_instruments

__all__ = ["BridgeStats", "ExportService", "Reply", "ReplyKind"]

_logger = logging.getLogger("appevents.bridge")


class ReplyKind(Enum):
    OK = (200, 0)
    BAD_REQUEST = (400, 3)  # INVALID_ARGUMENT
    UNAUTHORIZED = (401, 16)  # UNAUTHENTICATED
    NOT_FOUND = (404, 5)
    TOO_LARGE = (413, 8)  # RESOURCE_EXHAUSTED
    UNSUPPORTED = (415, 3)
    BUSY = (429, 8)  # RESOURCE_EXHAUSTED, with a retry hint
    UNAVAILABLE = (503, 14)

    @property
    def http_status(self) -> int:
        return self.value[0]

    @property
    def grpc_code(self) -> int:
        return self.value[1]

    @property
    def retryable(self) -> bool:
        return self in (ReplyKind.BUSY, ReplyKind.UNAVAILABLE)


@dataclass
class Reply:
    kind: ReplyKind
    message: str = ""
    response: ExportLogsServiceResponse = field(default_factory=ExportLogsServiceResponse)


@dataclass
class BridgeStats:
    """What the bridge took and answered since it started (the exporters count their own delivery)."""

    requests: int = 0
    #: Log records received in requests that were decoded.
    records: int = 0
    #: Events acknowledged to clients (delivered, or committed to the spool in durable mode).
    acknowledged: int = 0
    #: Records that carry no event (ignored).
    ignored: int = 0
    #: Events refused (invalid, or refused for good by an exporter), by reason.
    rejected: Counter[str] = field(default_factory=Counter)
    #: Requests answered with something other than 200 / OK, by reply.
    refused_requests: Counter[str] = field(default_factory=Counter)


class ExportService:
    """Shared by both listeners (each names itself as ``transport``: ``http``, ``grpc``); thread-safe."""

    def __init__(self, intake: Intake, token: SecretStr | None, instruments: BridgeInstruments | None = None) -> None:
        self.intake = intake
        self._expected = None if token is None else f"Bearer {token.get_secret_value()}".encode()
        self._lock = threading.Lock()
        self._stats = BridgeStats()
        self._log_once = LogOnce(_logger)
        self._instruments = instruments if instruments is not None else bridge_instruments()

    def authorized(self, authorization: str | None) -> bool:
        """Constant-time check of the ``Authorization`` header value (always true without a token)."""
        if self._expected is None:
            return True
        return hmac.compare_digest((authorization or "").encode(), self._expected)

    def refuse(self, kind: ReplyKind, message: str, transport: str) -> Reply:
        """A request refused before its events were looked at; counted, logged once per kind."""
        return self._refused(kind, message, transport, None)

    def _refused(self, kind: ReplyKind, message: str, transport: str, duration_s: float | None) -> Reply:
        with self._lock:
            self._stats.refused_requests[kind.name.lower()] += 1
        self._instruments.request(transport, kind.name.lower(), duration_s)
        if kind is not ReplyKind.BUSY:
            self._log_once(
                f"refused:{kind.name}",
                logging.WARNING,
                "appevents bridge: a request was refused (%s: %s); further refusals of this kind are counted "
                "(bridge stats), not logged",
                kind.name.lower(),
                message,
            )
        return Reply(kind, message)

    def export(self, request: ExportLogsServiceRequest, transport: str) -> Reply:
        started = time.monotonic()
        decoded = decode_events(request)
        records = decoded.rejected + decoded.ignored + len(decoded.events)
        answer = self.intake.deliver(decoded.events)
        acknowledged = 0
        rejected_by_reason = Counter(decoded.reasons)
        if answer.verdict is Verdict.OK:
            acknowledged = len(decoded.events) - sum(answer.failed.values())
            rejected_by_reason.update({f"exporter:{reason}": n for reason, n in answer.failed.items()})
        with self._lock:
            stats = self._stats
            stats.requests += 1
            stats.records += records
            stats.ignored += decoded.ignored
            stats.acknowledged += acknowledged
            stats.rejected.update(rejected_by_reason)
        self._instruments.records(transport, acknowledged, decoded.ignored, rejected_by_reason)
        if decoded.rejected:
            self._log_once(
                "rejected",
                logging.WARNING,
                "appevents bridge: %d record(s) in a request carry an event that was refused (%s); the valid events "
                "were delivered and the client told (OTLP partial success); further refusals are counted, not logged",
                decoded.rejected,
                "; ".join(decoded.messages),
            )
        if answer.verdict is Verdict.BUSY:
            return self._refused(ReplyKind.BUSY, answer.why, transport, time.monotonic() - started)
        if answer.verdict is Verdict.UNAVAILABLE:
            return self._refused(ReplyKind.UNAVAILABLE, answer.why, transport, time.monotonic() - started)
        rejected = decoded.rejected + sum(answer.failed.values())
        response = ExportLogsServiceResponse()
        if rejected:
            messages = list(decoded.messages)
            if answer.failed:
                messages.append("refused by an exporter: " + ", ".join(f"{n} {r}" for r, n in answer.failed.items()))
            response.partial_success.CopyFrom(
                ExportLogsPartialSuccess(rejected_log_records=rejected, error_message="; ".join(messages))
            )
        self._instruments.request(transport, "ok", time.monotonic() - started)
        return Reply(ReplyKind.OK, response=response)

    def stats(self) -> BridgeStats:
        with self._lock:
            s = self._stats
            return BridgeStats(
                s.requests, s.records, s.acknowledged, s.ignored, Counter(s.rejected), Counter(s.refused_requests)
            )
