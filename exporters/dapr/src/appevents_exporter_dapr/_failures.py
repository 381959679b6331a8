"""What to do about a failed call to the sidecar: pure decisions, no I/O.

daprd answers a binding call for a component it does not have with ``INTERNAL`` and the message
``error invoking output binding <name>: couldn't find output binding <name>``; a ``bindings.http`` endpoint that
answers 4xx/5xx surfaces as ``INTERNAL`` with ``received status code <n>``. A request beyond a gRPC size limit
fails with ``RESOURCE_EXHAUSTED`` and ``grpc: received message larger than max (N vs. M)`` (daprd) or ``Sent
message larger than max`` (our client); any other ``RESOURCE_EXHAUSTED`` is throttling. A bulk publish reports
refused entries one by one in the response (``failedEntries``), each with the broker's error text only.
"""

from __future__ import annotations

import random
import re
from enum import Enum

import grpc

__all__ = [
    "TRANSIENT_CODES",
    "EntryRefused",
    "Failure",
    "backoff_delay",
    "classify_entry_error",
    "classify_error",
    "describe_error",
    "error_code",
    "error_details",
    "failure_cause",
    "failure_reason",
]

#: gRPC codes worth retrying: the sidecar (or what it calls) may answer later.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


class Failure(Enum):
    TRANSIENT = "transient"
    """Retry with backoff."""
    PERMANENT = "permanent"
    """Count as failed; retrying will not help."""
    MISSING_COMPONENT = "missing_component"
    """The sidecar does not know the component: skip, and re-probe later."""
    UNAUTHORIZED = "unauthorized"
    """The endpoint behind the binding answered HTTP 401: drop the cached token and retry with a fresh one."""
    TOO_LARGE = "too_large"
    """The request exceeds a gRPC message size limit: fail the event for good (halve a request of several)."""


class EntryRefused(Exception):
    """A bulk publish entry the sidecar reported as failed; the message is the broker's error text."""


def error_code(exc: BaseException) -> grpc.StatusCode | None:
    code = exc.code() if isinstance(exc, grpc.RpcError) else None
    return code if isinstance(code, grpc.StatusCode) else None


def error_details(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        details = exc.details()
        return details if isinstance(details, str) else ""
    return ""


#: gRPC's size-limit messages, whichever side refused: "grpc: received message larger than max (N vs. M)" (Go,
#: daprd), "Received message larger than max" / "Sent message larger than max" (C core, Python clients).
_TOO_LARGE = re.compile(r"(received|sent) message larger than max", re.IGNORECASE)


def classify_error(exc: BaseException) -> Failure:
    """How to treat ``exc`` raised by one call to the sidecar."""
    code = error_code(exc)
    if code is None:
        return Failure.PERMANENT
    details = error_details(exc)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE.search(details):
        return Failure.TOO_LARGE
    if code in TRANSIENT_CODES:
        return Failure.TRANSIENT
    if "couldn't find output binding" in details or (
        code is grpc.StatusCode.INVALID_ARGUMENT and "pubsub" in details and "not found" in details
    ):
        return Failure.MISSING_COMPONENT
    if "status code 401" in details:
        return Failure.UNAUTHORIZED
    return Failure.PERMANENT


#: Words in a bulk publish entry's error that say the broker may take it later (timeouts, outages, throttling).
#: Anything else is the broker refusing that entry (too large, bad topic, not authorised): retrying will not help.
_TRANSIENT_ENTRY_ERROR = re.compile(
    r"deadline exceeded|time(d)? ?out|unavailable|connection (refused|reset)|broken pipe|\beof\b|temporar"
    r"|try again|too many requests|throttl|rate limit|resource exhausted|leader not available"
    r"|not enough replicas|circuit breaker",
    re.IGNORECASE,
)


def classify_entry_error(error: str) -> Failure:
    """How to treat one entry a bulk publish reported as failed, from its error text alone."""
    return Failure.TRANSIENT if _TRANSIENT_ENTRY_ERROR.search(error) else Failure.PERMANENT


def failure_cause(kind: Failure, exc: BaseException | None) -> str:
    """A bounded key for "logged once per cause": the kind and the gRPC code (or exception type), never the
    free-text details, which vary per event and would make every occurrence a new cause."""
    if exc is None:
        return f"{kind.value}:unknown"
    code = error_code(exc)
    return f"{kind.value}:{code.name if code is not None else type(exc).__name__}"


def failure_reason(kind: Failure, exc: BaseException | None) -> str:
    """The reason an event is reported failed or dropped with: a short key of bounded cardinality.

    ``too_large``, ``no_component``, ``unauthorized``; otherwise ``refused:<gRPC code>`` (the sidecar said no),
    ``refused:entry`` (the broker refused a bulk publish entry) or ``error:<exception type>`` (no gRPC answer).
    """
    if kind is Failure.TOO_LARGE:
        return "too_large"
    if kind is Failure.MISSING_COMPONENT:
        return "no_component"
    if kind is Failure.UNAUTHORIZED:
        return "unauthorized"
    if exc is None:
        return "error:unknown"
    if isinstance(exc, EntryRefused):
        return "refused:entry"
    code = error_code(exc)
    return f"refused:{code.name}" if code is not None else f"error:{type(exc).__name__}"


def describe_error(exc: BaseException | None) -> str:
    """One line about ``exc`` for logs and ``retry_reason``: the gRPC code and details, or the exception type and
    message (never headers or tokens: those are not part of either)."""
    if exc is None:
        text = "unknown"
    elif isinstance(exc, EntryRefused):
        text = f"bulk publish entry refused: {exc}"
    elif (code := error_code(exc)) is not None:
        text = f"{code.name}: {error_details(exc)}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())[:300]


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (0-based): exponential, capped, with "equal jitter".

    Half the capped delay is fixed, half random, so retries from many processes spread out yet never come
    back immediately.
    """
    capped = min(max_s, initial_s * (2 ** min(attempt, 32)))
    return float(capped / 2 + (rng or random).uniform(0, capped / 2))
