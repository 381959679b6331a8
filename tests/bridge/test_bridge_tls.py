"""TLS on both listeners, and the standard OTLP exporters (HTTP and gRPC, chosen by OTEL_EXPORTER_OTLP_PROTOCOL)
talking to it with the certificate as their trust root."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appevents import AppEventsSettings, Event, EventStore, configure
from appevents._memory import InMemoryEventExporter
from appevents.bridge import Bridge, BridgeSettings
from support.bridge_process import TOKEN
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def _issue(
    tmp_path: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    hosts: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path, Path]:
    """A certificate named ``name``: self-signed (a CA) when ``issuer`` is None, else signed by it; ``hosts``: valid
    for localhost and 127.0.0.1 (a server's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if hosts:
        addresses = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(addresses), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key, cert_path, key_path


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """The bridge's own certificate (for localhost and 127.0.0.1, self-signed: the clients' trust root too)."""
    _, _, cert_path, key_path = _issue(tmp_path, "bridge", None, hosts=True)
    return cert_path, key_path


def _tls_bridge(certificate: tuple[Path, Path], **settings: Any) -> tuple[Bridge, InMemoryEventExporter]:
    cert, key = certificate
    received = InMemoryEventExporter()
    bridge_settings = BridgeSettings(
        http="127.0.0.1:0", grpc="127.0.0.1:0", tls_cert_file=cert, tls_key_file=key, **settings
    )
    return Bridge(bridge_settings, AppEventsSettings(exporters=[]), exporters={"memory": received}).start(), received


def _point_the_otlp_exporter_at(
    bridge: Bridge, protocol: str, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standard OTLP exporter of ``protocol`` aimed at ``bridge`` over TLS, trusting its certificate."""
    port = bridge.http_port if protocol == "http/protobuf" else bridge.grpc_port
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"https://localhost:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(certificate[0]))
    # requests lets these override the exporter's own trust root (OTEL_EXPORTER_OTLP_CERTIFICATE): not ours to fix,
    # but a machine that sets them (this one does) would otherwise refuse the bridge's certificate
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def tls_bridge(certificate: tuple[Path, Path]) -> Iterator[tuple[Bridge, InMemoryEventExporter]]:
    bridge, received = _tls_bridge(certificate, token=TOKEN)
    yield bridge, received
    bridge.stop(5)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_otlp_exporters_deliver_over_tls(
    protocol: str,
    tls_bridge: tuple[Bridge, InMemoryEventExporter],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge, received = tls_bridge
    _point_the_otlp_exporter_at(bridge, protocol, certificate, monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {TOKEN}")
    configure(AppEventsSettings(exporters=["otlp"]))
    exporter = EventStore.pipeline().exporter("otlp")  # type: ignore[union-attr]
    standard = getattr(exporter, "inner", exporter)  # the OTLP exporter inside appevents' refusal-aware wrapper
    assert ("grpc" in type(standard).__module__) == (protocol == "grpc")
    sent = [Event(event_type="secure.event", data={"i": i}) for i in range(20)]
    for event in sent:
        EventStore.publish(event)
    assert EventStore.flush_sync(20)
    wait_until(lambda: len(received.events) == 20, timeout_s=10)
    assert [e.event_id for e in received.events] == [e.event_id for e in sent]


def test_plain_http_is_not_answered_by_a_tls_listener(tls_bridge: tuple[Bridge, InMemoryEventExporter]) -> None:
    bridge, _ = tls_bridge
    request = urllib.request.Request(f"http://127.0.0.1:{bridge.http_port}/healthz")
    with pytest.raises(OSError):
        urllib.request.urlopen(request, timeout=5)
    context = ssl.create_default_context(cafile=str(bridge.settings.tls_cert_file))
    with urllib.request.urlopen(f"https://localhost:{bridge.http_port}/healthz", context=context, timeout=5) as ok:
        assert ok.status == 200


def test_settings_never_show_the_token_and_refuse_half_a_tls_pair(certificate: tuple[Path, Path]) -> None:
    settings = BridgeSettings(token=TOKEN)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    assert TOKEN not in json.dumps(settings.model_dump(mode="json"))
    with pytest.raises(ValueError, match="both a certificate and a key"):
        BridgeSettings(tls_cert_file=certificate[0])
    with pytest.raises(ValueError, match="both listeners are off"):
        BridgeSettings(http="off", grpc="off")
    with pytest.raises(ValueError, match="HOST:PORT"):
        BridgeSettings(http="localhost")


@pytest.fixture
def client_certificates(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """The CA the bridge trusts for clients, a client certificate it issued, and one from a CA it does not trust."""
    ca_cert, ca_key, ca_path, _ = _issue(tmp_path, "client-ca", None)
    _, _, client_cert, client_key = _issue(tmp_path, "collector", (ca_cert, ca_key))
    other_cert, other_key, _, _ = _issue(tmp_path, "other-ca", None)
    _, _, stranger_cert, stranger_key = _issue(tmp_path, "stranger", (other_cert, other_key))
    return {"ca": (ca_path, ca_path), "client": (client_cert, client_key), "stranger": (stranger_cert, stranger_key)}


@pytest.fixture
def mtls_bridge(
    certificate: tuple[Path, Path], client_certificates: dict[str, tuple[Path, Path]]
) -> Iterator[tuple[Bridge, InMemoryEventExporter]]:
    bridge, received = _tls_bridge(certificate, tls_client_ca_file=client_certificates["ca"][0])
    yield bridge, received
    bridge.stop(5)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_with_a_client_ca_only_clients_with_its_certificates_deliver(
    protocol: str,
    mtls_bridge: tuple[Bridge, InMemoryEventExporter],
    certificate: tuple[Path, Path],
    client_certificates: dict[str, tuple[Path, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge, received = mtls_bridge
    _point_the_otlp_exporter_at(bridge, protocol, certificate, monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
    for who in ("stranger", "client"):
        cert, key = client_certificates[who]
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(key))
        configure(AppEventsSettings(exporters=["otlp"], schedule_delay_ms=20))
        sent = [Event(event_type="secure.event", data={"who": who, "i": i}) for i in range(5)]
        for event in sent:
            EventStore.publish(event)
        EventStore.flush_sync(15)
        stats = EventStore.stats()["otlp"]
        if who == "stranger":  # its certificate is from a CA the bridge does not trust: the handshake fails
            assert (stats.delivered, stats.failed) == (0, 5), stats
            assert received.events == []
        else:
            assert (stats.delivered, stats.failed) == (5, 0), stats
            wait_until(lambda: len(received.events) == 5, timeout_s=10)
            assert [e.event_id for e in received.events] == [e.event_id for e in sent]
        EventStore.shutdown(5)


def test_a_client_without_a_certificate_gets_no_answer_from_a_mutual_tls_listener(
    mtls_bridge: tuple[Bridge, InMemoryEventExporter], client_certificates: dict[str, tuple[Path, Path]]
) -> None:
    bridge, _ = mtls_bridge
    url = f"https://localhost:{bridge.http_port}/healthz"
    context = ssl.create_default_context(cafile=str(bridge.settings.tls_cert_file))
    with pytest.raises(OSError):
        urllib.request.urlopen(url, context=context, timeout=5)
    context.load_cert_chain(*client_certificates["client"])
    with urllib.request.urlopen(url, context=context, timeout=5) as ok:
        assert ok.status == 200


def test_a_client_ca_without_tls_is_refused(client_certificates: dict[str, tuple[Path, Path]]) -> None:
    with pytest.raises(ValueError, match="APPEVENTS_BRIDGE_TLS_CLIENT_CA_FILE"):
        BridgeSettings(tls_client_ca_file=client_certificates["ca"][0])
