"""One policy for every event: what the library does to an event at publish, done to each event that comes in.

An event that arrives at the bridge was validated as ``Event`` (see :mod:`._decode`); then, in this order:

1. **numbers JSON consumers can read**: a non-finite number (``NaN``, ``Infinity``, ``1e400``, which a JSON parser
   may read as infinite) or an integer outside the signed 64-bit range in ``data`` refuses the event, naming the
   field (``data.a.b[2]``). Parsers that read such a value do it differently (null, a float, an error), so the event
   a destination stores would not be the event that was sent;
2. **who may say what** (:class:`Grant`): the tenants and applications the request's credential may publish for;
3. **redaction**: the values of ``APPEVENTS_REDACT_KEYS`` in ``data`` become ``"[REDACTED]"``, as at publish.

Each step refuses one event (``Refused``: a kind and a message naming the field), never the request.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from appevents._models import Event
from appevents._redaction import Redactor

__all__ = [
    "ANY",
    "FULL",
    "Grant",
    "Policy",
    "Refused",
    "check_numbers",
    "load_tokens_file",
    "lone_surrogate",
]

#: In a grant: any tenant (or application), an event naming none included.
ANY = "*"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


class Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Grant:
    """What one credential may publish for: ``tenants`` and ``applications`` (``metadata.tenant_id`` and
    ``metadata.application_name``), each a set of names or ``{"*"}`` for any."""

    tenants: frozenset[str] = frozenset({ANY})
    applications: frozenset[str] = frozenset({ANY})

    def check(self, event: Event) -> None:
        _allowed(self.tenants, event.metadata.tenant_id, "tenant_id")
        _allowed(self.applications, event.metadata.application_name, "application_name")


#: The grant of ``APPEVENTS_BRIDGE_TOKEN``, of client certificates, and of an unauthenticated loopback listener.
FULL = Grant()


def _allowed(names: frozenset[str], value: str | None, field: str) -> None:
    if ANY in names or (value is not None and value in names):
        return
    raise Refused(
        "forbidden",
        f"metadata.{field} {value!r} is not one this credential may publish for (APPEVENTS_BRIDGE_TOKENS_FILE)",
    )


class _TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: SecretStr = Field(min_length=1)
    tenants: list[str] = Field(min_length=1)
    applications: list[str] = Field(default_factory=lambda: [ANY], min_length=1)


class _TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[_TokenEntry]


def load_tokens_file(path: Path) -> dict[str, Grant]:
    """``APPEVENTS_BRIDGE_TOKENS_FILE``: a JSON object ``{"tokens": [{"token": "...", "tenants": ["acme"],
    "applications": ["billing"]}, ...]}`` (``applications`` optional; ``"*"`` for any) as token → grant. Raises
    ``ValueError`` naming the problem, never a token."""
    try:
        document = _TokensFile.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror or exc}") from None
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "the file"
        raise ValueError(f"{where}: {error['msg']}") from None
    grants: dict[str, Grant] = {}
    for index, entry in enumerate(document.tokens):
        secret = entry.token.get_secret_value().strip()
        if not secret or secret in grants:
            raise ValueError(f"tokens.{index}.token: empty, or the same as another entry's")
        grants[secret] = Grant(frozenset(entry.tenants), frozenset(entry.applications))
    return grants


@dataclass(frozen=True)
class Policy:
    redactor: Redactor | None = None

    def apply(self, event: Event, grant: Grant) -> None:
        """Refuse ``event`` (:class:`Refused`) or redact it in place."""
        check_numbers(event.data)
        if grant is not FULL:
            grant.check(event)
        if self.redactor is not None:
            try:
                redacted = self.redactor(event.data)  # the same object when nothing matches
            except ValueError as exc:
                raise Refused("invalid", f"data: {exc}") from None
            if redacted is not event.data:
                # As EventStore.publish does: the validated data, redacted; no new validation needed.
                event.__dict__["data"] = redacted


def check_numbers(data: dict[str, Any]) -> None:
    """Refuse (:class:`Refused`, naming the field) a non-finite float or an integer outside int64 in ``data``."""
    if not _has_unreadable_number(data):  # the common case: one quick walk, no paths built
        return
    found = _unreadable_number(data)
    if found is not None:
        where, value = found
        if isinstance(value, float):
            raise Refused("invalid", f"{where}: {value!r} is not a finite number (JSON has no NaN or Infinity)")
        raise Refused("invalid", f"{where}: an integer of {value.bit_length()} bits is outside the signed 64-bit range")


def _has_unreadable_number(data: dict[str, Any]) -> bool:
    stack: list[Any] = [data]
    pop, extend = stack.pop, stack.extend
    while stack:
        value = pop()
        kind = type(value)
        if kind is dict:
            extend(value.values())
        elif kind is list:
            extend(value)
        elif kind is float:
            if value - value != 0.0:  # NaN and the infinities (x - x is NaN for them, 0.0 otherwise)
                return True
        elif kind is int:
            if not _INT64_MIN <= value <= _INT64_MAX:
                return True
        elif kind not in (str, bool, type(None)):
            return True  # a subclass of a JSON type: the isinstance walk below decides
    return False


def _unreadable_number(data: dict[str, Any]) -> tuple[str, Any] | None:
    stack: list[tuple[str, Any]] = [("data", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}", item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
        elif _unreadable(value):
            return where, value
    return None


def _unreadable(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _INT64_MAX


def lone_surrogate(document: Any, where: str = "event") -> str | None:
    """Where (``event.data.k``) ``document`` holds a string or key with a lone surrogate, if anywhere."""
    stack: list[tuple[str, Any]] = [(where, document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return where
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and _SURROGATE.search(key):
                    return f"{where} (a key)"
                stack.append((f"{where}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return None
