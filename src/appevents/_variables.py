"""Which ``APPEVENTS_*`` variables something reads, and the ones nothing reads (a typo, most of the time).

Every settings class registers in the ``appevents.settings`` entry-point group under the part of the variable
names after ``APPEVENTS_``: ``bridge`` (``APPEVENTS_BRIDGE_*``, the core), ``dapr`` and ``auth`` (the Dapr
exporter), ``segment`` (the Segment exporter); the core's own :class:`AppEventsSettings` is known without one. A
class is loaded only when a variable under its prefix is set, or to suggest a name for a variable nothing
reads. A registered class that cannot be loaded (its distribution's dependencies missing) leaves the variables under
its prefix unjudged: no false alarm.

``appevents doctor`` fails on an unknown variable; ``configure()`` (and the first publish) warns once per set of
unknown names, with a did-you-mean where one is close.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points

from pydantic_settings import BaseSettings

from appevents._settings import AppEventsSettings

__all__ = ["SETTINGS_ENTRY_POINT_GROUP", "UnknownVariable", "unknown_variables", "warn_unknown_variables"]

SETTINGS_ENTRY_POINT_GROUP = "appevents.settings"
_PREFIX = "APPEVENTS_"
#: Variables of ours that no settings class reads: the collector configurations under collector/ read them.
_READ_BY_THE_COLLECTOR_CONFIGS = frozenset({"APPEVENTS_BRIDGE_ENDPOINT", "APPEVENTS_EVENTS_FILE"})
_logger = logging.getLogger("appevents")


@dataclass(frozen=True)
class UnknownVariable:
    """An ``APPEVENTS_*`` variable no installed part of appevents reads, and the closest one that is read."""

    name: str
    suggestion: str | None

    def __str__(self) -> str:
        hint = f" (did you mean {self.suggestion}?)" if self.suggestion else ""
        return f"{self.name}{hint}"


def variables_of(settings_class: type[BaseSettings]) -> set[str]:
    """The environment variables a pydantic-settings class reads (upper case: they are matched ignoring case)."""
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names.update(str(choice).upper() for choice in choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[UnknownVariable]:
    """The ``APPEVENTS_*`` variables of ``environ`` (default: the process environment) nothing installed reads."""
    environ = os.environ if environ is None else environ
    known = variables_of(AppEventsSettings) | _READ_BY_THE_COLLECTOR_CONFIGS
    candidates = sorted(name for name in environ if name.upper().startswith(_PREFIX) and name.upper() not in known)
    if not candidates:
        return []
    registered = {ep.name: ep for ep in entry_points(group=SETTINGS_ENTRY_POINT_GROUP)}
    unjudged: list[str] = []

    def load(part: str) -> None:
        try:
            settings_class = registered.pop(part).load()
            known.update(variables_of(settings_class))
        except Exception:  # its distribution is broken or a dependency missing: judge nothing under its prefix
            unjudged.append(f"{_PREFIX}{part.upper()}_")

    for part in list(registered):
        if any(name.upper().startswith(f"{_PREFIX}{part.upper()}_") for name in candidates):
            load(part)
    unknown = [
        name for name in candidates if name.upper() not in known and not name.upper().startswith(tuple(unjudged))
    ]
    if unknown:
        for part in list(registered):  # every name that is read, for the suggestions
            load(part)
    return [UnknownVariable(name, _closest(name.upper(), known)) for name in unknown]


def _closest(name: str, known: set[str]) -> str | None:
    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return matches[0] if matches else None


def warn_unknown_variables() -> None:
    """One warning naming the unknown ``APPEVENTS_*`` variables, once per set of them in this process."""
    try:
        unknown = unknown_variables()
    except Exception:  # a check, never a reason for configure() to fail
        return
    if unknown:
        _warn_once(tuple(str(variable) for variable in unknown))


@functools.cache
def _warn_once(described: tuple[str, ...]) -> None:
    _logger.warning(
        "appevents: %s %s not read by appevents or any installed exporter and %s ignored",
        ", ".join(described),
        "is" if len(described) == 1 else "are",
        "is" if len(described) == 1 else "are",
    )
