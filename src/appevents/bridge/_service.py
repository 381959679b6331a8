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

import ctypes
import ctypes.util
import hmac
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from pydantic import SecretStr

from appevents._counting import LogOnce
from appevents.bridge._decode import (
    DEFAULT_MAX_RECORDS,
    BadRequest,
    TooLarge,
    decode_events,
    decompress,
    parse_request,
)
from appevents.bridge._intake import Intake, Verdict
from appevents.bridge._metrics import BridgeInstruments, bridge_instruments
from appevents.bridge._policy import FULL, Grant, Policy

__all__ = ["BridgeStats", "ExportService", "Reply", "ReplyKind"]

_logger = logging.getLogger("appevents.bridge")


def _malloc_trim() -> Callable[[], object]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


_give_back_memory = _malloc_trim()


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

    def __init__(
        self,
        intake: Intake,
        token: SecretStr | None,
        instruments: BridgeInstruments | None = None,
        *,
        max_body_bytes: int = 4 * 1024 * 1024,
        max_records: int = DEFAULT_MAX_RECORDS,
        tokens: Mapping[str, Grant] | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.intake = intake
        self.max_body_bytes = max_body_bytes
        self.max_records = max_records
        self._decoding = threading.Lock()
        grants = dict(tokens or {})
        if token is not None:
            grants[token.get_secret_value()] = FULL
        self._grants = [(secret.encode(), grant) for secret, grant in grants.items()]
        self._policy = policy if policy is not None else Policy()
        self._lock = threading.Lock()
        self._stats = BridgeStats()
        self._log_once = LogOnce(_logger)
        self._instruments = instruments if instruments is not None else bridge_instruments()

    def authenticate(self, authorization: Sequence[str] | str | None) -> Grant | None:
        """What the ``Authorization`` header values of a request may publish for; None: not authorized. Without a
        token or a tokens file, everything. Exactly one value is taken, the ``Bearer`` scheme in any case (RFC
        9110), compared in constant time with every token (no early exit). Two values are refused whatever they
        hold: which one a proxy on the way would have read is unknowable."""
        if not self._grants:
            return FULL
        values = [authorization] if isinstance(authorization, str) else list(authorization or ())
        if len(values) != 1:
            return None
        scheme, _, credentials = values[0].strip().partition(" ")
        presented = credentials.strip().encode()
        found: Grant | None = None
        for token, grant in self._grants:
            if hmac.compare_digest(presented, token):
                found = grant
        return found if scheme.lower() == "bearer" else None

    def authorized(self, authorization: Sequence[str] | str | None) -> bool:
        return self.authenticate(authorization) is not None

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

    def export(
        self,
        body: bytes | bytearray,
        transport: str,
        *,
        json_encoded: bool = False,
        content_encoding: str = "",
        grant: Grant = FULL,
    ) -> Reply:
        """One request body, as received: decompressed, decoded, delivered, answered. Decoding (the only step whose
        memory grows with what the body holds) runs one request at a time: it holds the GIL anyway, and so the
        bridge's memory is its bodies in flight plus one decode, whatever those bodies contain."""
        started = time.monotonic()
        large = len(body) > 256 * 1024
        try:
            with self._decoding:
                try:
                    payload = decompress(body, content_encoding, self.max_body_bytes)
                    large = large or len(payload) > 256 * 1024
                    del body
                    logs = parse_request(payload, json_encoded=json_encoded, max_records=self.max_records)
                    decoded = decode_events(logs, self._policy, grant)
                    del payload
                finally:
                    if large:
                        _give_back_memory()
        except TooLarge as exc:  # like every refusal before the events are decoded, not timed
            return self._refused(ReplyKind.TOO_LARGE, str(exc), transport, None)
        except BadRequest as exc:
            return self._refused(ReplyKind.BAD_REQUEST, str(exc), transport, None)
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
