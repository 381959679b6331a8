"""What to do about a failed call to the sidecar: pure decisions, no I/O.

daprd answers a binding call for a component it does not have with ``INTERNAL`` and the message
``error invoking output binding <name>: couldn't find output binding <name>``; a ``bindings.http`` endpoint that
answers 4xx/5xx surfaces as ``INTERNAL`` with ``received status code <n>``. A bulk publish reports refused
entries one by one in the response (``failedEntries``), each with the broker's error text only.
"""

from __future__ import annotations

import random
import re
from enum import Enum

import grpc

__all__ = [
    "TRANSIENT_CODES",
    "Failure",
    "backoff_delay",
    "classify_entry_error",
    "classify_error",
    "error_code",
    "error_details",
    "failure_cause",
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


def error_code(exc: BaseException) -> grpc.StatusCode | None:
    code = exc.code() if isinstance(exc, grpc.RpcError) else None
    return code if isinstance(code, grpc.StatusCode) else None


def error_details(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        details = exc.details()
        return details if isinstance(details, str) else ""
    return ""


def classify_error(exc: BaseException) -> Failure:
    """How to treat ``exc`` raised by one call to the sidecar."""
    code = error_code(exc)
    if code is None:
        return Failure.PERMANENT
    if code in TRANSIENT_CODES:
        return Failure.TRANSIENT
    details = error_details(exc)
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


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (0-based): exponential, capped, with "equal jitter".

    Half the capped delay is fixed, half random, so retries from many processes spread out yet never come
    back immediately.
    """
    capped = min(max_s, initial_s * (2 ** min(attempt, 32)))
    return float(capped / 2 + (rng or random).uniform(0, capped / 2))
