"""Pure parts of the Dapr exporter: error classification, backoff, topic lookup, custom header providers."""

from __future__ import annotations

import random
from collections.abc import Mapping

import grpc
import pytest

from appevents import Event, EventMetadata, EventStore
from appevents.records import TOPIC_ATTRIBUTE, record_attributes
from appevents_exporter_dapr import DaprExporter
from appevents_exporter_dapr.failures import Failure, backoff_delay, classify_error
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
    # Records without the attribute (another producer) fall back to parsing the event.
    exporter = DaprExporter()
    assert exporter._topic_of(tricky.model_dump_json()) == 't"quoted'
    assert exporter._topic_of(Event(event_type="a.b", data={"topic_name": "x"}).model_dump_json()) == "a.b"


@pytest.mark.timeout(30)
def test_a_custom_header_provider_supplies_the_authorization_header(
    sidecar: DaprSidecar, receiver: HttpReceiver, dapr_env
) -> None:
    class FromSecretStore:
        def headers(self) -> Mapping[str, str]:
            return {"Authorization": "Bearer from-secret-store"}

    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar)
    from appevents import AppEventsSettings, configure

    configure(AppEventsSettings(exporters=[]), exporters={"dapr": DaprExporter(header_provider=FromSecretStore())})
    try:
        EventStore.publish(Event(event_type="order.received"))
        assert EventStore.flush_sync(20)
    finally:
        EventStore.shutdown()
    assert [r.headers["Authorization"] for r in receiver.requests] == ["Bearer from-secret-store"]
