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


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "bridge.crt", tmp_path / "bridge.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_bridge(certificate: tuple[Path, Path]) -> Iterator[tuple[Bridge, InMemoryEventExporter]]:
    cert, key = certificate
    received = InMemoryEventExporter()
    settings = BridgeSettings(http="127.0.0.1:0", grpc="127.0.0.1:0", token=TOKEN, tls_cert_file=cert, tls_key_file=key)
    bridge = Bridge(settings, AppEventsSettings(exporters=[]), exporters={"memory": received}).start()
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
    port = bridge.http_port if protocol == "http/protobuf" else bridge.grpc_port
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"https://localhost:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(certificate[0]))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {TOKEN}")
    # requests lets these override the exporter's own trust root (OTEL_EXPORTER_OTLP_CERTIFICATE): not ours to fix,
    # but a machine that sets them (this one does) would otherwise refuse the bridge's certificate
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    configure(AppEventsSettings(exporters=["otlp"]))
    exporter = EventStore.pipeline().exporter("otlp")  # type: ignore[union-attr]
    assert ("grpc" in type(exporter).__module__) == (protocol == "grpc")
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
