"""The doctor's ``otlp`` check: one empty OTLP logs export request to the endpoint the ``otlp`` exporter would use,
with the headers it would send — so a wrong path, a missing or refused credential, TLS trouble or something that
is not an OTLP receiver at all shows up here, not as events that never arrive.

The endpoint, protocol, headers and certificate come from the standard variables, as the OpenTelemetry exporters
read them: ``OTEL_EXPORTER_OTLP_LOGS_*`` first, then ``OTEL_EXPORTER_OTLP_*``. An empty
``ExportLogsServiceRequest`` (zero bytes of protobuf) carries no record: a collector (or ``appevents bridge``)
answers it like any export and stores nothing. Header values are never shown; URLs lose their credentials.
"""

from __future__ import annotations

import base64
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from opentelemetry.util.re import parse_env_headers

from appevents._encoded import Check, safe_url
from appevents._errors import ConfigurationError
from appevents._registry import otlp_protocol

__all__ = ["check_otlp"]

NAME = "otlp endpoint"
_DEFAULTS = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}
_GRPC_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def _variable(suffix: str) -> tuple[str, str] | None:
    """(variable, value) of ``OTEL_EXPORTER_OTLP_LOGS_<suffix>``, else ``OTEL_EXPORTER_OTLP_<suffix>``, if set."""
    for variable in (f"OTEL_EXPORTER_OTLP_LOGS_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"):
        value = os.environ.get(variable, "").strip()
        if value:
            return variable, value
    return None


def check_otlp(timeout_s: float) -> Check:
    try:
        protocol = otlp_protocol("LOGS")
    except ConfigurationError as exc:
        return Check(NAME, False, str(exc), "set OTEL_EXPORTER_OTLP_PROTOCOL to http/protobuf or grpc")
    found = _variable("ENDPOINT")
    if found is None:
        url = _DEFAULTS[protocol]
        source = f"default {url}; OTEL_EXPORTER_OTLP_ENDPOINT unset"
        variable = "OTEL_EXPORTER_OTLP_ENDPOINT"
    else:
        variable, url = found
        source = f"{variable}={safe_url(url)}"
    if protocol == "http/protobuf" and variable != "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT":
        url = url.rstrip("/") + "/v1/logs"  # the signal's path is added to the base endpoint, not to LOGS_ENDPOINT
    headers_found = _variable("HEADERS")
    headers = parse_env_headers(headers_found[1], liberal=True) if headers_found else {}
    headers_source = headers_found[0] if headers_found else "OTEL_EXPORTER_OTLP_HEADERS"
    certificate = _variable("CERTIFICATE")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check(NAME, False, f"not an http(s) URL with a host ({source})", f"fix {variable}")
    if parts.username is not None and protocol == "http/protobuf":
        # user:password@ in the URL: HTTP basic auth, as the exporter's HTTP client sends it (never shown).
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        if not any(key.lower() == "authorization" for key in headers):
            userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers = {**headers, "Authorization": "Basic " + base64.b64encode(userinfo.encode()).decode()}
    started = time.monotonic()
    if protocol == "grpc":
        verdict = _probe_grpc(parts, headers, certificate, timeout_s)
    else:
        verdict = _probe_http(url, headers, certificate, timeout_s)
    took = (time.monotonic() - started) * 1000
    ok, what, fix = verdict
    fix = fix.replace("{endpoint}", variable).replace("{headers}", headers_source)
    where = f"{protocol} {safe_url(url)}"
    if ok:
        return Check(NAME, True, f"{where} took an empty logs export in {took:.0f} ms ({source})")
    return Check(NAME, False, f"{where}: {what} ({source})", fix)


_START = "start the collector, or point {endpoint} at it"


def _probe_http(
    url: str, headers: Mapping[str, str], certificate: tuple[str, str] | None, timeout_s: float
) -> tuple[bool, str, str]:
    request = urllib.request.Request(
        url, data=b"", headers={**headers, "Content-Type": "application/x-protobuf"}, method="POST"
    )
    context = None
    if url.startswith("https:"):
        try:
            context = ssl.create_default_context(cafile=certificate[1] if certificate else None)
        except (OSError, ssl.SSLError) as exc:
            return _unreadable(certificate, exc)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as answer:
            answer.read()
            return True, f"HTTP {answer.status}", ""
    except urllib.error.HTTPError as error:
        status = error.code
        error.close()
        if status in (401, 403):
            return False, f"the request was refused (HTTP {status})", "check the credentials in {headers}"
        if status in (404, 405):
            return False, f"no OTLP logs receiver there (HTTP {status})", "check the path of {endpoint}"
        return False, f"answered HTTP {status}", _START
    except TimeoutError:
        return False, f"no answer within {timeout_s:g} s", _START
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return False, f"no answer within {timeout_s:g} s", _START
        if isinstance(reason, ssl.SSLError):
            return (
                False,
                f"TLS failed ({type(reason).__name__})",
                "check the certificate (OTEL_EXPORTER_OTLP_CERTIFICATE)",
            )
        return False, f"no connection ({type(reason).__name__})", _START


def _probe_grpc(
    parts: urllib.parse.SplitResult, headers: Mapping[str, str], certificate: tuple[str, str] | None, timeout_s: float
) -> tuple[bool, str, str]:
    try:
        import grpc
    except ImportError:
        return False, "grpcio is not installed", "pip install 'appevents[otlp]'"
    target = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 4317)}"
    insecure = _variable("INSECURE")
    if parts.scheme == "http" or (insecure is not None and insecure[1].lower() == "true"):
        channel = grpc.insecure_channel(target)
    else:
        try:
            root = Path(certificate[1]).read_bytes() if certificate else None
        except OSError as exc:
            return _unreadable(certificate, exc)
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root))
    with channel:
        call = channel.unary_unary(_GRPC_METHOD)
        try:
            call(b"", metadata=[(key.lower(), value) for key, value in headers.items()], timeout=timeout_s)
        except grpc.RpcError as error:
            code = error.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return False, f"the request was refused ({code.name})", "check the credentials in {headers}"
            if code is grpc.StatusCode.UNIMPLEMENTED:
                return False, "no OTLP logs service there (UNIMPLEMENTED)", "check {endpoint}"
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return False, f"no answer within {timeout_s:g} s", _START
            return False, f"{code.name}", _START
    return True, "OK", ""


def _unreadable(certificate: tuple[str, str] | None, exc: Exception) -> tuple[bool, str, str]:
    variable = certificate[0] if certificate else "OTEL_EXPORTER_OTLP_CERTIFICATE"
    return False, f"the certificate in {variable} cannot be used ({type(exc).__name__})", f"fix {variable}"
