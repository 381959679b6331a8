"""The exporter registry: exporters are found by name in the ``appevents.exporters`` entry-point group.

Each entry point is an :class:`ExporterFactory`, ``(settings) -> exporter | None`` (None: the exporter decided it
is disabled, and said why once). The exporter distributions (``appevents-exporter-dapr``,
``appevents-exporter-segment``) register there, so the core never imports them; the core registers its own
(``local``, ``memory``, and the OpenTelemetry SDK's ``console`` and ``otlp``, built here).
"""

from __future__ import annotations

import difflib
import importlib
import os
from importlib.metadata import entry_points
from typing import Any, Protocol

from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, LogRecordExporter
from pydantic import ValidationError

from appevents._errors import ConfigurationError
from appevents._settings import AppEventsSettings

__all__ = [
    "EXPORTER_ENTRY_POINT_GROUP",
    "ExporterFactory",
    "available_exporters",
    "create_console_exporter",
    "create_otlp_exporter",
    "load_exporter",
    "otlp_exporter",
    "otlp_exporter_class",
    "otlp_protocol",
    "unknown_exporter",
]

EXPORTER_ENTRY_POINT_GROUP = "appevents.exporters"


class ExporterFactory(Protocol):
    """What an ``appevents.exporters`` entry point loads: builds the exporter from the core settings (its own
    ``APPEVENTS_<NAME>_*`` settings it reads itself), or returns None when it decided it is disabled (said why once).
    Bad settings raise :class:`ConfigurationError` or a pydantic ``ValidationError`` naming the field."""

    def __call__(self, settings: AppEventsSettings) -> object | None: ...


def available_exporters() -> list[str]:
    """Names of the exporters installed in this environment."""
    return sorted({ep.name for ep in entry_points(group=EXPORTER_ENTRY_POINT_GROUP)})


#: Exporters shipped as distributions of their own: how to install one that is missing.
_INSTALL_COMMANDS = {"dapr": "pip install 'appevents[dapr]'", "segment": "pip install 'appevents[segment]'"}


def unknown_exporter(name: str) -> tuple[str, str]:
    """What to say of an exporter name nothing is registered under: the problem (with a did-you-mean over the
    installed and the known exporters) and the fix (the install command only for a distribution that exists)."""
    installed = available_exporters()
    if name in _INSTALL_COMMANDS:
        return f"exporter {name!r} is not installed", f"`{_INSTALL_COMMANDS[name]}`, or fix APPEVENTS_EXPORTERS"
    close = difflib.get_close_matches(name, sorted(set(installed) | set(_INSTALL_COMMANDS)), n=1, cutoff=0.6)
    suggestion = f" (did you mean {close[0]!r}?)" if close else ""
    problem = f"no appevents exporter is named {name!r}{suggestion}; installed: {', '.join(installed)}"
    missing = [f"{known} (`{command}`)" for known, command in _INSTALL_COMMANDS.items() if known not in installed]
    fix = "fix APPEVENTS_EXPORTERS" + (f"; also available: {', '.join(missing)}" if missing else "")
    return problem, fix


def load_exporter(name: str, settings: AppEventsSettings) -> object | None:
    """Build the exporter registered as ``name``; :class:`ConfigurationError` if none is installed."""
    matches = entry_points(group=EXPORTER_ENTRY_POINT_GROUP, name=name)
    if not matches:
        problem, fix = unknown_exporter(name)
        raise ConfigurationError(f"{problem}: {fix}")
    factory: ExporterFactory = next(iter(matches)).load()
    try:
        return factory(settings)
    except ConfigurationError:
        raise
    except ValidationError as exc:
        # Without the offending input values: a bad setting may be a secret.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"exporter {name!r} is misconfigured: {problems}") from None


def create_console_exporter(settings: AppEventsSettings) -> LogRecordExporter:
    """``console``: the OTel SDK's console exporter (one JSON log record per event on stdout)."""
    return ConsoleLogRecordExporter()


def otlp_protocol(signal: str) -> str:
    """The OTLP protocol for ``signal`` (``LOGS``, ``METRICS``): ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL``, else
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``; :class:`ConfigurationError` for anything but
    ``http/protobuf`` and ``grpc`` (the OpenTelemetry Python SDK has no http/json exporters)."""
    protocol = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip() or "http/protobuf"
    if protocol not in ("http/protobuf", "grpc"):
        raise ConfigurationError(
            f"OTEL_EXPORTER_OTLP_({signal}_)PROTOCOL is {protocol!r}; appevents' OTLP exporters speak "
            "'http/protobuf' or 'grpc' (the OpenTelemetry Python SDK has no http/json exporters)"
        )
    return protocol


#: The OTLP exporter class of each signal, in ``opentelemetry.exporter.otlp.proto.<http|grpc>``.
_OTLP_EXPORTER_CLASSES = {
    "LOGS": ("_log_exporter", "OTLPLogExporter"),
    "METRICS": ("metric_exporter", "OTLPMetricExporter"),
}


def otlp_exporter(signal: str) -> Any:
    """The standard OTLP exporter of ``signal`` (``LOGS``, ``METRICS``) for the protocol :func:`otlp_protocol`
    chooses; it reads the other ``OTEL_EXPORTER_OTLP_*`` variables itself. :class:`ConfigurationError` when the
    exporter's package is missing."""
    exporter_class, _ = otlp_exporter_class(signal)
    return exporter_class()


def otlp_exporter_class(signal: str) -> tuple[Any, str]:
    """The class of :func:`otlp_exporter` and its transport (``http`` or ``grpc``)."""
    protocol = otlp_protocol(signal)
    transport = "grpc" if protocol == "grpc" else "http"
    module_name, class_name = _OTLP_EXPORTER_CLASSES[signal]
    try:
        module = importlib.import_module(f"opentelemetry.exporter.otlp.proto.{transport}.{module_name}")
    except ImportError as exc:
        raise ConfigurationError(
            f"OTLP {signal.lower()} over {protocol} need opentelemetry-exporter-otlp-proto-{transport}: "
            "pip install 'appevents[otlp]'"
        ) from exc
    return getattr(module, class_name), transport


def create_otlp_exporter(settings: AppEventsSettings) -> LogRecordExporter:
    """``otlp``: the standard OTLP log exporter of the protocol ``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`` (or
    ``OTEL_EXPORTER_OTLP_PROTOCOL``) names: ``http/protobuf`` (default) or ``grpc``. Each reads the other standard
    ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_EXPORTER_OTLP_LOGS_*`` variables itself (endpoint, headers, timeout,
    compression, certificates). A refused credential (401/403, ``UNAUTHENTICATED``/``PERMISSION_DENIED``) is
    counted failed, ``refused:<status>``, not ``unavailable`` (:mod:`appevents._otlp_logs`)."""
    from appevents._otlp_logs import refusal_aware

    return refusal_aware(*otlp_exporter_class("LOGS"))
