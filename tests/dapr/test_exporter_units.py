"""Pure parts of the Dapr exporter: error classification, backoff, topic lookup, settings, custom header
providers."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import grpc
import pytest

from appevents import Event, EventMetadata
from appevents._records import TOPIC_ATTRIBUTE, record_attributes
from appevents.exporting import EncodedEvent
from appevents_exporter_dapr import DaprExporter, DaprExporterSettings
from appevents_exporter_dapr._failures import (
    EntryRefused,
    Failure,
    backoff_delay,
    classify_entry_error,
    classify_error,
    failure_cause,
    failure_reason,
)
from support.dapr_sidecar import DaprSidecar, HttpReceiver


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (FakeRpcError(grpc.StatusCode.UNAVAILABLE), Failure.TRANSIENT),
        (FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED), Failure.TRANSIENT),
        (FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED), Failure.TRANSIENT),
        (FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded, try again"), Failure.TRANSIENT),
        (FakeRpcError(grpc.StatusCode.ABORTED), Failure.TRANSIENT),
        (FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad"), Failure.PERMANENT),
        (
            FakeRpcError(
                grpc.StatusCode.INTERNAL,
                "error invoking output binding eventstore: couldn't find output binding eventstore",
            ),
            Failure.MISSING_COMPONENT,
        ),
        (FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "pubsub events is not found"), Failure.MISSING_COMPONENT),
        (
            FakeRpcError(grpc.StatusCode.INTERNAL, "error invoking output binding x: received status code 401"),
            Failure.UNAUTHORIZED,
        ),
        (ValueError("not grpc"), Failure.PERMANENT),
    ],
)
def test_errors_are_classified_like_daprd_reports_them(error: BaseException, expected: Failure) -> None:
    assert classify_error(error) is expected


@pytest.mark.parametrize(
    "details",
    [
        "grpc: received message larger than max (5242966 vs. 4194304)",  # daprd (Go)
        "SERVER: Received message larger than max (200024 vs. 100000)",  # a C-core server (the stand-in)
        "CLIENT: Sent message larger than max (2023 vs. 1000)",  # our own client's send limit
    ],
)
def test_a_message_over_the_grpc_size_limit_is_too_large_not_throttling(details: str) -> None:
    assert classify_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, details)) is Failure.TOO_LARGE
    # The same words under another code are not a size limit.
    assert classify_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, details)) is Failure.PERMANENT


@pytest.mark.parametrize(
    ("kind", "error", "reason"),
    [
        (
            Failure.PERMANENT,
            FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad event 1 (x=123)"),
            "refused:INVALID_ARGUMENT",
        ),
        (Failure.PERMANENT, FakeRpcError(grpc.StatusCode.INTERNAL, "received status code 500"), "refused:INTERNAL"),
        (Failure.TOO_LARGE, FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max (9 vs. 8)"), "too_large"),
        (Failure.MISSING_COMPONENT, None, "no_component"),
        (Failure.UNAUTHORIZED, FakeRpcError(grpc.StatusCode.INTERNAL, "received status code 401"), "unauthorized"),
        (Failure.PERMANENT, EntryRefused("kafka server: Message was too large (topic orders-7)"), "refused:entry"),
        (Failure.PERMANENT, ValueError("no gRPC answer"), "error:ValueError"),
    ],
)
def test_outcome_reasons_are_short_bounded_keys_never_the_details(
    kind: Failure, error: BaseException | None, reason: str
) -> None:
    assert failure_reason(kind, error) == reason


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("context deadline exceeded", Failure.TRANSIENT),
        ("kafka: client has run out of available brokers: dial tcp: connection refused", Failure.TRANSIENT),
        ("Post https://sns: read: connection reset by peer", Failure.TRANSIENT),
        ("i/o timeout", Failure.TRANSIENT),
        ("request timed out", Failure.TRANSIENT),
        ("unexpected EOF", Failure.TRANSIENT),
        ("ThrottlingException: Rate exceeded", Failure.TRANSIENT),
        ("kafka server: Leader Not Available", Failure.TRANSIENT),
        ("kafka server: Message was too large, server rejected it to avoid allocation error", Failure.PERMANENT),
        ("topic 'thereof' is not authorized for this client", Failure.PERMANENT),
        ("", Failure.PERMANENT),
    ],
)
def test_bulk_publish_entry_errors_are_classified_by_their_text(error: str, expected: Failure) -> None:
    assert classify_entry_error(error) is expected


def test_the_log_once_cause_is_kind_and_code_never_the_free_text_details() -> None:
    first = FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad event 1 (field x=123)")
    second = FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad event 2 (field y=456)")
    assert failure_cause(Failure.PERMANENT, first) == failure_cause(Failure.PERMANENT, second)
    assert failure_cause(Failure.PERMANENT, first) == "permanent:INVALID_ARGUMENT"
    assert failure_cause(Failure.PERMANENT, ValueError("detail 1")) == "permanent:ValueError"
    assert failure_cause(Failure.PERMANENT, FakeRpcError(grpc.StatusCode.INTERNAL)) != failure_cause(
        Failure.PERMANENT, first
    )


def test_static_metadata_values_are_secret_in_repr_but_sent_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_DAPR_METADATA", '{"X-Api-Key": "env-api-key-9f1c"}')
    from_env = DaprExporterSettings()
    in_code = DaprExporterSettings(metadata={"X-Api-Key": "code-api-key-77ab"})  # type: ignore[dict-item]

    for settings, value in ((from_env, "env-api-key-9f1c"), (in_code, "code-api-key-77ab")):
        assert settings.metadata_values() == {"X-Api-Key": value}
        for text in (repr(settings), str(settings), repr(settings.metadata), repr(DaprExporter(settings))):
            assert value not in text
        assert "X-Api-Key" in repr(settings)  # the key stays visible: it says what is configured


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.1, 2.0, rng) for n in range(10)]
    assert all(0.05 <= d <= 0.1 for d in delays[:1])
    assert all(1.0 <= d <= 2.0 for d in delays[6:])
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jitter: not all the same


def test_the_topic_travels_as_a_record_attribute_and_data_keys_cannot_spoof_it() -> None:
    tricky = Event(event_type="a.b", data={"topic_name": "from-data"}, metadata=EventMetadata(topic_name='t"quoted'))
    assert record_attributes(tricky)[TOPIC_ATTRIBUTE] == 't"quoted'
    assert TOPIC_ATTRIBUTE not in record_attributes(Event(event_type="a.b", data={"topic_name": "x"}))
    # A record naming no event type (not emitted by appevents) falls back to parsing the event.
    exporter = DaprExporter()
    assert exporter._topic_of(tricky.model_dump_json()) == 't"quoted'
    assert exporter._topic_of(Event(event_type="a.b", data={"topic_name": "x"}).model_dump_json()) == "a.b"


def test_the_pubsub_topic_comes_from_the_encoded_event_without_parsing_its_json() -> None:
    def encoded(event: Event) -> EncodedEvent:
        # A body that is not JSON at all: routing must not look inside it.
        return EncodedEvent(event.event_id, event.event_type, b"<opaque>", record_attributes(event), 0)

    exporter = DaprExporter(DaprExporterSettings(mode="pubsub"), header_provider=None)
    with_default = DaprExporter(DaprExporterSettings(mode="pubsub", default_topic="all-events"), header_provider=None)
    routed = encoded(Event(event_type="a.b", metadata=EventMetadata(topic_name="orders")))
    unrouted = encoded(Event(event_type="a.b", data={"topic_name": "x"}))

    assert exporter._topic(routed) == with_default._topic(routed) == "orders"
    assert exporter._topic(unrouted) == "a.b"
    assert with_default._topic(unrouted) == "all-events"


@pytest.mark.timeout(30)
def test_a_custom_header_provider_supplies_the_authorization_header(
    sidecar: DaprSidecar, receiver: HttpReceiver, dapr_env: Callable[..., None]
) -> None:
    class FromSecretStore:
        def headers(self) -> Mapping[str, str]:
            return {"Authorization": "Bearer from-secret-store"}

    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar)
    event = Event(event_type="order.received")
    exporter = DaprExporter(header_provider=FromSecretStore())
    try:
        body = event.model_dump_json().encode()
        outcome = exporter.export_events(
            [EncodedEvent(event.event_id, event.event_type, body, record_attributes(event), 0)]
        )
    finally:
        exporter.shutdown()
    assert (outcome.failed, outcome.dropped, outcome.retry) == ([], [], [])
    assert [r.headers["Authorization"] for r in receiver.requests] == ["Bearer from-secret-store"]
