"""``appevents bridge``: OTLP logs in (HTTP and gRPC), appevents events out through the configured exporters.

An OpenTelemetry Collector pipeline (or any OTLP log exporter, appevents' own ``otlp`` included) sends log records
here; every record that carries an event (see :mod:`appevents.bridge._decode`) becomes that event again — not
re-enriched, not rewritten — and goes to the exporters named in ``APPEVENTS_EXPORTERS`` (Dapr binding or pub/sub,
Segment, the local log), through the same delivery engine, durable spool included when ``APPEVENTS_SPOOL_PATH``
is set. A request is answered once its events are durable or delivered (see :mod:`appevents.bridge._intake`), so
what the bridge acknowledges is never lost; back-pressure is a 429 / ``RESOURCE_EXHAUSTED`` with a retry hint.

It is a network listener: ``APPEVENTS_BRIDGE_TOKEN`` makes every request carry ``Authorization: Bearer <token>``
(checked in constant time, never logged), ``APPEVENTS_BRIDGE_TOKENS_FILE`` gives each of several tokens the tenants
it may publish for (see :mod:`._policy`), TLS is one certificate and key for both listeners (with
``APPEVENTS_BRIDGE_TLS_CLIENT_CA_FILE``, clients need a certificate issued by those CAs); beyond loopback one of
these is required unless the operator allows anyone. Bodies, records, deadlines, concurrency and open
connections are bounded (see :class:`BridgeSettings` and :mod:`._http`); every event gets the library's
validation and redaction. SIGTERM or SIGINT: stop accepting, answer the requests in flight, drain, exit.

In code::

    bridge = Bridge(BridgeSettings(http="127.0.0.1:0", grpc="off")).start()
    ...  # bridge.http_port
    bridge.stop()
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time
import traceback
from collections.abc import Mapping
from types import FrameType

from opentelemetry.metrics import MeterProvider

from appevents import _runtime
from appevents._counting import DeliveryStats
from appevents._encoded import mask_credentials
from appevents._errors import ConfigurationError
from appevents._otel_env import OTEL_EXPORTER_NAME
from appevents._pipeline import Pipeline, build_pipeline
from appevents._redaction import redactor_of
from appevents._settings import AppEventsSettings
from appevents.bridge._intake import Intake
from appevents.bridge._metrics import bridge_instruments, meter_provider_from_environment
from appevents.bridge._policy import Grant, Policy, load_tokens_file
from appevents.bridge._service import BridgeStats, ExportService
from appevents.bridge._settings import BridgeSettings, parse_endpoint

__all__ = ["Bridge", "BridgeSettings", "BridgeStats", "run_bridge"]

_logger = logging.getLogger("appevents.bridge")


class Bridge:
    """The two listeners over one delivery pipeline. ``start()`` builds the pipeline (configuration errors raise
    :class:`~appevents.ConfigurationError`) and opens the listeners; ``stop()`` drains and closes everything.
    ``meter_provider``: where the engine's and the bridge's self-metrics go (default: the global provider)."""

    def __init__(
        self,
        settings: BridgeSettings | None = None,
        app_settings: AppEventsSettings | None = None,
        *,
        exporters: Mapping[str, object] | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.settings = settings if settings is not None else BridgeSettings()
        self.app_settings = app_settings if app_settings is not None else AppEventsSettings()
        self._exporters = exporters
        self._meter_provider = meter_provider
        self.pipeline: Pipeline | None = None
        self._service: ExportService | None = None
        self._http: object | None = None
        self._grpc: object | None = None
        self._stopped = False

    @property
    def http_port(self) -> int | None:
        from appevents.bridge._http import HttpListener

        return self._http.port if isinstance(self._http, HttpListener) else None

    @property
    def grpc_port(self) -> int | None:
        from appevents.bridge._grpc import GrpcListener

        return self._grpc.port if isinstance(self._grpc, GrpcListener) else None

    def start(self) -> Bridge:
        settings = self.settings
        if OTEL_EXPORTER_NAME in self.app_settings.exporters:
            # The process's own OTel logs pipeline: none in a bridge (events would go nowhere), or one whose OTLP
            # exporter points back at a collector feeding this bridge (a loop).
            chosen = (
                ""
                if "exporters" in self.app_settings.model_fields_set
                else " (chosen because OTEL_LOGS_EXPORTER names appevents exporters and APPEVENTS_EXPORTERS is unset)"
            )
            raise ConfigurationError(
                f"the bridge cannot deliver to the {OTEL_EXPORTER_NAME!r} exporter{chosen}: set APPEVENTS_EXPORTERS "
                "to the destinations (e.g. dapr,segment)"
            )
        _runtime.set_max_event_bytes(self.app_settings.max_event_bytes)
        self.pipeline = build_pipeline(self.app_settings, self._exporters, meter_provider=self._meter_provider)
        self._service = ExportService(
            Intake(self.pipeline, ack_timeout_s=settings.ack_timeout_s),
            settings.token,
            bridge_instruments(self._meter_provider),
            max_body_bytes=settings.max_body_bytes,
            max_records=settings.max_records,
            tokens=self._tokens(),
            policy=Policy(redactor_of(self.app_settings)),
        )
        try:
            http_address = parse_endpoint(settings.http)
            if http_address is not None:
                from appevents.bridge._http import HttpListener

                self._http = HttpListener(
                    http_address,
                    self._service,
                    max_body_bytes=settings.max_body_bytes,
                    max_concurrent_requests=settings.max_concurrent_requests,
                    max_connections=settings.max_connections,
                    header_timeout_s=settings.header_timeout_s,
                    body_timeout_s=settings.body_timeout_s,
                    ssl_context=self._ssl_context(),
                ).start()
            grpc_address = parse_endpoint(settings.grpc)
            if grpc_address is not None:
                from appevents.bridge._grpc import GrpcListener

                self._grpc = GrpcListener(
                    grpc_address,
                    self._service,
                    max_body_bytes=settings.max_body_bytes,
                    max_concurrent_requests=settings.max_concurrent_requests,
                    credentials=self._grpc_credentials(),
                ).start()
        except BaseException:
            self.stop(timeout_s=1.0)
            raise
        return self

    def _tokens(self) -> dict[str, Grant]:
        if self.settings.tokens_file is None:
            return {}
        try:
            return load_tokens_file(self.settings.tokens_file)
        except ValueError as exc:
            raise ConfigurationError(f"APPEVENTS_BRIDGE_TOKENS_FILE ({self.settings.tokens_file}): {exc}") from None

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.settings.tls_cert_file is None or self.settings.tls_key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.settings.tls_cert_file, self.settings.tls_key_file)
        if self.settings.tls_client_ca_file is not None:
            context.load_verify_locations(cafile=self.settings.tls_client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED  # a client without a certificate from these CAs fails the handshake
        return context

    def _grpc_credentials(self) -> object | None:
        if self.settings.tls_cert_file is None or self.settings.tls_key_file is None:
            return None
        import grpc

        client_ca = self.settings.tls_client_ca_file
        credentials: object = grpc.ssl_server_credentials(
            [(self.settings.tls_key_file.read_bytes(), self.settings.tls_cert_file.read_bytes())],
            root_certificates=client_ca.read_bytes() if client_ca is not None else None,
            require_client_auth=client_ca is not None,
        )
        return credentials

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop accepting, answer the requests in flight, drain the exporters; all within ``timeout_s`` (default
        ``APPEVENTS_BRIDGE_DRAIN_TIMEOUT_S``). True when nothing accepted was lost (see ``Pipeline.shutdown``)."""
        if self._stopped:
            return True
        self._stopped = True
        from appevents.bridge._grpc import GrpcListener
        from appevents.bridge._http import HttpListener

        timeout_s = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        grpc_done: threading.Event | None = None
        if isinstance(self._grpc, GrpcListener):
            grpc_done = self._grpc.stop(timeout_s)
        if isinstance(self._http, HttpListener):
            self._http.stop_accepting()
        if self._service is not None:
            self._service.intake.close(max(0.0, deadline - time.monotonic()))
        if isinstance(self._http, HttpListener):
            self._http.close_connections()
        if grpc_done is not None:
            grpc_done.wait(max(0.0, deadline - time.monotonic()))
        if self.pipeline is None:
            return True
        return self.pipeline.shutdown(max(0.5, deadline - time.monotonic()))

    def stats(self) -> BridgeStats:
        return self._service.stats() if self._service is not None else BridgeStats()

    def delivery_stats(self) -> dict[str, DeliveryStats]:
        """The exporters' counters (as ``EventStore.stats()``)."""
        return self.pipeline.stats() if self.pipeline is not None else {}


def run_bridge(settings: BridgeSettings | None = None, app_settings: AppEventsSettings | None = None) -> int:
    """Run the bridge until SIGTERM or SIGINT; the exit code is 0 when nothing accepted was lost. Its self-metrics
    (the engine's and the bridge's) go where the standard ``OTEL_METRICS_EXPORTER`` says (``otlp``, ``console``),
    else to the global meter provider."""
    stop = threading.Event()
    masking = _MaskCredentials()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:  # every line the process logs, the exporters' included
        handler.addFilter(masking)
    try:
        return _run(stop, settings, app_settings)
    finally:
        for handler in handlers:
            handler.removeFilter(masking)


class _MaskCredentials(logging.Filter):
    """Masks what URLs in a log line (and its traceback) may carry: user info, credential-like query values."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_credentials("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return True


def _run(stop: threading.Event, settings: BridgeSettings | None, app_settings: AppEventsSettings | None) -> int:
    meter_provider = meter_provider_from_environment("appevents-bridge")

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        bridge = Bridge(settings, app_settings, meter_provider=meter_provider).start()
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _shutdown_meter_provider(meter_provider)
        raise
    try:
        exposed = bridge.settings.exposed_unauthenticated()
        if exposed:
            _logger.warning(
                "appevents bridge: UNAUTHENTICATED: %s accept(s) events from anyone who can reach them "
                "(--allow-unauthenticated); set APPEVENTS_BRIDGE_TOKEN or client certificates to require credentials",
                " and ".join(f"{name} on {getattr(bridge.settings, name)}" for name in exposed),
            )
        listening = [f"OTLP/HTTP on {_where(bridge.settings.http, bridge.http_port)}"] if bridge.http_port else []
        if bridge.grpc_port:
            listening.append(f"OTLP/gRPC on {_where(bridge.settings.grpc, bridge.grpc_port)}")
        _logger.info(
            "appevents bridge: listening for %s%s; delivering to %s",
            " and ".join(listening),
            (" (TLS, client certificates required)" if bridge.settings.tls_client_ca_file else " (TLS)")
            if bridge.settings.tls_cert_file
            else "",
            ", ".join(bridge.app_settings.exporters) or "nothing",
        )
        while not stop.wait(0.5):
            pass
        _logger.info("appevents bridge: stopping (draining for up to %gs)", bridge.settings.drain_timeout_s)
    finally:
        ok = bridge.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _shutdown_meter_provider(meter_provider)
    stats = bridge.stats()
    _logger.log(
        logging.INFO if ok else logging.WARNING,  # the drain's loss, if any, was said at WARNING by the pipeline
        "appevents bridge: stopped; %d event(s) acknowledged, %d record(s) ignored, %d refused %s",
        stats.acknowledged,
        stats.ignored,
        sum(stats.rejected.values()),
        dict(stats.rejected) if stats.rejected else "",
    )
    return 0 if ok else 1


#: Bound of the last metrics export at exit (the provider's shutdown), on top of the drain.
METRICS_SHUTDOWN_TIMEOUT_S = 5.0


def _shutdown_meter_provider(provider: MeterProvider | None) -> None:
    """The last collection and export of the bridge's own provider, within ``METRICS_SHUTDOWN_TIMEOUT_S``."""
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        try:
            shutdown(timeout_millis=METRICS_SHUTDOWN_TIMEOUT_S * 1000)
        except Exception:  # metrics never decide the exit code
            _logger.warning("appevents bridge: the metrics exporter did not shut down cleanly", exc_info=True)


def _where(configured: str, port: int | None) -> str:
    address = parse_endpoint(configured)
    host = address[0] if address is not None else "?"
    return f"{host}:{port}"
