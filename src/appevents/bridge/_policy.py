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
    "load_tokens_file",
    "lone_surrogate",
]

#: In a grant: any tenant (or application), an event naming none included.
ANY = "*"
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
        """Refuse ``event`` (:class:`Refused`) or redact it in place. Numbers JSON consumers cannot read (NaN,
        the infinities, integers outside int64) were refused by the event's own validation already."""
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
