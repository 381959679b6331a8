"""The Dapr exporter, driven through the real pipeline (``configure`` → ``EventStore.publish`` → ``flush_sync``)
against the sidecar stand-in, the ``bindings.http`` endpoint behind it and the OAuth2 token endpoint."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from importlib.metadata import entry_points

import grpc
import pytest

from appevents import AppEventsSettings, Event, EventMetadata, EventStore, configure
from appevents._demo.events import example_events
from appevents.exporting import encode_event
from appevents_exporter_dapr import (
    ClientCredentialsTokenProvider,
    DaprExporter,
    StaticHeaderProvider,
    create_dapr_exporter,
)
from appevents_exporter_dapr import _sidecar as sidecar_module
from support.dapr_sidecar import DaprSidecar, HttpReceiver
from support.signal_masks import leaves_process_signals_alone
from support.token_server import TokenServer

pytestmark = pytest.mark.timeout(60)

Exporter = Callable[[], DaprExporter]


def numbered_events(count: int, event_type: str = "order.received") -> list[Event]:
    return [Event(event_type=event_type, data={"n": n}) for n in range(count)]


def publish_all(events: list[Event], timeout_s: float = 30) -> None:
    for event in events:
        EventStore.publish(event)
    assert EventStore.flush_sync(timeout_s), "the pipeline did not drain in time"


def ids_in(bodies: list[bytes]) -> list[str]:
    ids: list[str] = []
    for body in bodies:
        document = json.loads(body)
        ids += [e["event_id"] for e in document] if isinstance(document, list) else [document["event_id"]]
    return ids


# -- the application-sdk EventStore's wire contract ---------------------------------------------------------------
def test_every_example_event_arrives_with_bearer_token_and_its_json_body(
    sidecar: DaprSidecar, receiver: HttpReceiver, token_server: TokenServer, dapr_env, pipeline: Exporter
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar, token_server)
    exporter = pipeline()
    events = example_events()

    publish_all(events)

    [token] = token_server.issued
    by_id = {json.loads(r.body)["event_id"]: r for r in receiver.requests}
    assert len(receiver.requests) == len(events)
    for event in events:
        request = by_id[event.event_id]
        assert request.headers["Authorization"] == f"Bearer {token}"
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.body) == json.loads(event.model_dump_json())
        assert Event.model_validate_json(request.body) == event
    assert {c.operation for c in sidecar.binding_calls} == {"create"}
    assert exporter.stats().delivered == len(events)
    assert exporter.stats().failed == 0


def test_static_metadata_entries_are_sent_and_capitalised_ones_become_headers(
    sidecar: DaprSidecar, receiver: HttpReceiver, dapr_env, pipeline: Exporter
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar, APPEVENTS_DAPR_METADATA='{"X-Source": "billing", "path": "/v2"}')
    pipeline()

    publish_all(numbered_events(3))

    assert all(call.metadata["X-Source"] == "billing" for call in sidecar.binding_calls)
    assert all(call.metadata["path"] == "/v2" for call in sidecar.binding_calls)
    assert all(r.headers["X-Source"] == "billing" and "path" not in r.headers for r in receiver.requests)
    assert all("Authorization" not in r.headers for r in receiver.requests)  # auth is off here


def test_static_metadata_values_reach_the_endpoint_but_never_logs_or_reprs(
    sidecar: DaprSidecar,
    receiver: HttpReceiver,
    dapr_env,
    pipeline: Exporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api_key = "static-api-key-5d0e2b71"
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(
        sidecar, APPEVENTS_DAPR_METADATA=json.dumps({"X-Api-Key": api_key}), APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S="0"
    )
    caplog.set_level(logging.DEBUG)
    exporter = pipeline()

    publish_all(numbered_events(3))
    receiver.status = 500  # failures are logged: the key must not be in those lines either
    publish_all(numbered_events(2))

    assert [r.headers["X-Api-Key"] for r in receiver.requests] == [api_key] * 5
    assert exporter.stats().failed == 2
    assert any("status code 500" in r.getMessage() for r in caplog.records)
    for text in (repr(exporter.settings), str(exporter.settings), repr(exporter), caplog.text):
        assert api_key not in text


def test_token_endpoint_is_hit_once_for_hundreds_of_events_and_again_after_expiry(
    sidecar: DaprSidecar, receiver: HttpReceiver, token_server: TokenServer, dapr_env, pipeline: Exporter
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    token_server.expires_in = 60
    dapr_env(sidecar, token_server, APPEVENTS_AUTH_REFRESH_SKEW_S="0")
    exporter = pipeline()
    now = [1000.0]  # the token provider's clock, moved by the test instead of waited for
    provider = exporter._header_provider
    assert isinstance(provider, ClientCredentialsTokenProvider)
    provider._clock = lambda: now[0]

    publish_all(numbered_events(400))
    assert token_server.hits == 1
    assert len(receiver.requests) == 400

    now[0] += 59.0  # still valid: no new request
    publish_all(numbered_events(10))
    assert token_server.hits == 1
    now[0] += 1.5  # past expires_in
    publish_all(numbered_events(90))

    assert token_server.hits == 2
    first, second = token_server.issued
    headers = Counter(r.headers["Authorization"] for r in receiver.requests)
    assert headers == {f"Bearer {first}": 410, f"Bearer {second}": 90}


def test_dapr_api_token_arrives_as_dapr_api_token_metadata(
    receiver: HttpReceiver, dapr_env, pipeline: Exporter
) -> None:
    sidecar = DaprSidecar(api_token="sidecar-api-token-123").start()
    try:
        sidecar.register("eventstore", "bindings.http", receiver.url)
        dapr_env(sidecar)
        exporter = pipeline()
        publish_all(numbered_events(20))
    finally:
        sidecar.stop()
    assert len(sidecar.binding_calls) == 20
    assert {c.grpc_metadata["dapr-api-token"] for c in sidecar.binding_calls} == {"sidecar-api-token-123"}
    assert exporter.stats().delivered == 20


# -- component detection ----------------------------------------------------------------------------------------
def test_missing_component_warns_once_counts_skipped_and_delivers_once_registered(
    sidecar: DaprSidecar,
    receiver: HttpReceiver,
    dapr_env,
    pipeline: Exporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dapr_env(sidecar)
    exporter = pipeline()
    caplog.set_level(logging.WARNING)

    publish_all(numbered_events(30))
    publish_all(numbered_events(30))

    warnings = [r for r in caplog.records if "eventstore" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "kind: Component" in warnings[0].getMessage()
    assert "bindings.http" in warnings[0].getMessage()
    assert exporter.stats().skipped_no_component == 60
    assert receiver.requests == []

    sidecar.register("eventstore", "bindings.http", receiver.url)
    late = numbered_events(10, "order.late")
    for _ in range(50):  # the exporter re-probes with (short) backoff; publish until it has noticed
        publish_all(late[:1])
        if receiver.requests:
            break
        time.sleep(0.1)
    publish_all(late[1:])

    delivered_ids = set(ids_in(receiver.bodies()))
    assert {e.event_id for e in late} <= delivered_ids
    assert len([r for r in caplog.records if "no binding component" in r.getMessage()]) == 1


def test_sidecar_down_at_start_and_up_three_seconds_later_gets_every_event(
    sidecar_unstarted: DaprSidecar,
    receiver: HttpReceiver,
    token_server: TokenServer,
    dapr_env,
    pipeline: Exporter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sidecar = sidecar_unstarted
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar, token_server)
    exporter = pipeline()
    events = numbered_events(300)
    for event in events:
        EventStore.publish(event)  # returns at once although nothing listens yet
    starter = threading.Timer(3.0, sidecar.start)
    starter.start()
    try:
        assert EventStore.flush_sync(timeout_s=40)
    finally:
        starter.join()

    assert sorted(ids_in(receiver.bodies())) == sorted(e.event_id for e in events)
    assert exporter.stats().failed == 0
    assert exporter.stats().retried > 0
    assert "Health check" not in capsys.readouterr().out  # the SDK's blocking health loop never ran


def test_dapr_client_is_created_on_the_exporter_thread_not_the_callers(
    sidecar: DaprSidecar, receiver: HttpReceiver, dapr_env, pipeline: Exporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    created_on: list[str] = []
    real_client = sidecar_module.DaprClient

    def recording_client(*args: object, **kwargs: object) -> object:
        created_on.append(threading.current_thread().name)
        return real_client(*args, **kwargs)

    monkeypatch.setattr(sidecar_module, "DaprClient", recording_client)
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar)
    pipeline()
    publish_all(numbered_events(5))

    assert created_on == ["appevents-dapr"]
    assert threading.main_thread().name not in created_on


# -- failures ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED]
)
def test_transient_errors_are_retried_until_delivered(
    sidecar: DaprSidecar, receiver: HttpReceiver, dapr_env, pipeline: Exporter, code: grpc.StatusCode
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar)
    exporter = pipeline()
    sidecar.fail_next(25, code)
    events = numbered_events(40)

    publish_all(events)

    assert sorted(ids_in(receiver.bodies())) == sorted(e.event_id for e in events)
    assert exporter.stats().retried >= 25
    assert exporter.stats().failed == 0


@pytest.mark.parametrize("mode", ["binding", "batch"])
def test_a_permanent_error_on_one_event_does_not_stop_the_others(
    sidecar: DaprSidecar,
    receiver: HttpReceiver,
    dapr_env,
    pipeline: Exporter,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar, APPEVENTS_DAPR_MODE=mode)
    exporter = pipeline()
    events = numbered_events(100)
    poisoned = Event(event_type="order.received", data={"poison": "poison-pill-7"})
    sidecar.fail_when("poison-pill-7", grpc.StatusCode.INVALID_ARGUMENT)
    caplog.set_level(logging.ERROR)

    publish_all([*events[:50], poisoned, *events[50:]])

    delivered = ids_in(receiver.bodies())
    assert sorted(delivered) == sorted(e.event_id for e in events)  # each of the others once, not the poison
    assert exporter.stats().failed == 1
    assert exporter.stats().delivered == 100
    assert len([r for r in caplog.records if "INVALID_ARGUMENT" in r.getMessage()]) == 1


def test_endpoint_errors_are_counted_and_logged_once_per_cause(
    sidecar: DaprSidecar, receiver: HttpReceiver, dapr_env, pipeline: Exporter, caplog: pytest.LogCaptureFixture
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    receiver.status = 500
    dapr_env(sidecar)
    exporter = pipeline()
    caplog.set_level(logging.ERROR)

    publish_all(numbered_events(30))

    assert exporter.stats().failed == 30
    assert len([r for r in caplog.records if "status code 500" in r.getMessage()]) == 1
    receiver.status = 200
    publish_all(numbered_events(5))
    assert exporter.stats().delivered == 5


def test_errors_differing_only_in_their_details_are_logged_once(
    sidecar: DaprSidecar, receiver: HttpReceiver, dapr_env, pipeline: Exporter, caplog: pytest.LogCaptureFixture
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar)
    exporter = pipeline()
    markers = [f"bad-record-{n}" for n in range(6)]
    for marker in markers:  # each rejection's message names its own event: six distinct detail texts
        sidecar.fail_when(marker, grpc.StatusCode.INVALID_ARGUMENT)
    caplog.set_level(logging.ERROR)

    publish_all([Event(event_type="order.received", data={"tag": marker}) for marker in markers])

    assert exporter.stats().failed == 6
    logged = [r.getMessage() for r in caplog.records if "INVALID_ARGUMENT" in r.getMessage()]
    assert len(logged) == 1
    assert "bad-record-0" in logged[0]  # the details stay in the message


# -- other modes ------------------------------------------------------------------------------------------------
def test_batch_mode_delivers_every_event_once_in_few_calls(
    sidecar: DaprSidecar, receiver: HttpReceiver, token_server: TokenServer, dapr_env, pipeline: Exporter
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar, token_server, APPEVENTS_DAPR_MODE="batch", APPEVENTS_DAPR_BATCH_MAX_BYTES="50000")
    exporter = pipeline()
    events = numbered_events(1500)

    publish_all(events)

    bodies = receiver.bodies()
    assert all(body.startswith(b"[") for body in bodies)
    assert all(len(body) <= 50_000 for body in bodies)
    assert sorted(ids_in(bodies)) == sorted(e.event_id for e in events)
    assert len(bodies) < len(events) / 50
    assert {r.headers["Authorization"] for r in receiver.requests} == {f"Bearer {token_server.issued[0]}"}
    assert exporter.stats().delivered == 1500


def test_batch_mode_measures_chunks_in_bytes_so_non_ascii_payloads_stay_under_the_limit(
    receiver: HttpReceiver, dapr_env, pipeline: Exporter
) -> None:
    limit = 6000
    # The sidecar refuses requests beyond its gRPC limit like daprd (RESOURCE_EXHAUSTED); headroom for the
    # binding name and metadata around the data.
    sidecar = DaprSidecar(max_message_bytes=limit + 1024).start()
    try:
        sidecar.register("eventstore", "bindings.http", receiver.url)
        dapr_env(
            sidecar,
            APPEVENTS_DAPR_MODE="batch",
            APPEVENTS_DAPR_BATCH_MAX_BYTES=str(limit),
            APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S="2",
        )
        exporter = pipeline()
        text = "注文を受け付けました🚀📦" * 30  # 3- and 4-byte characters: ~2.7 bytes per character
        events = [Event(event_type="order.received", data={"n": n, "text": text}) for n in range(200)]

        publish_all(events)
    finally:
        sidecar.stop()

    bodies = receiver.bodies()
    assert [len(body) for body in bodies if len(body) > limit] == []
    assert sorted(ids_in(bodies)) == sorted(e.event_id for e in events)
    assert all(e["data"]["text"] == text for body in bodies for e in json.loads(body))
    assert len(bodies) > 1
    assert exporter.stats().failed == 0
    assert exporter.stats().delivered == 200


def test_pubsub_mode_bulk_publishes_every_event_once_with_its_topic_and_id(
    sidecar: DaprSidecar, dapr_env, pipeline: Exporter
) -> None:
    sidecar.register("events", "pubsub.redis")
    dapr_env(sidecar, APPEVENTS_DAPR_MODE="pubsub", APPEVENTS_DAPR_PUBSUB="events")
    exporter = pipeline()
    events = numbered_events(300, "order.received") + numbered_events(200, "data.batch_processed")
    events.append(Event(event_type="order.received", metadata=EventMetadata(topic_name="audit")))

    publish_all(events)

    published = {p.cloudevent["id"]: p for p in sidecar.published}
    assert len(sidecar.published) == len(events) == len(published)
    for event in events:
        message = published[event.event_id]
        assert message.pubsub == "events"
        assert message.topic == event.metadata.topic_name
        assert message.content_type == "application/json"
        assert Event.model_validate_json(message.data) == event
    assert {p.topic for p in sidecar.published} == {"order.received", "data.batch_processed", "audit"}
    assert exporter.stats().calls < 20


def test_pubsub_entry_the_broker_refuses_is_failed_once_not_retried_and_the_others_delivered(
    sidecar: DaprSidecar, dapr_env, pipeline: Exporter, caplog: pytest.LogCaptureFixture
) -> None:
    sidecar.register("events", "pubsub.kafka")
    sidecar.refuse_entries_when(
        "oversized-order-17", "kafka server: Message was too large, server rejected it to avoid allocation error"
    )
    dapr_env(sidecar, APPEVENTS_DAPR_MODE="pubsub", APPEVENTS_DAPR_PUBSUB="events")
    exporter = pipeline()
    caplog.set_level(logging.ERROR)
    events = numbered_events(100)
    refused = Event(event_type="order.received", data={"order": "oversized-order-17"})

    publish_all([*events[:40], refused, *events[40:]])

    assert sorted(p.cloudevent["id"] for p in sidecar.published) == sorted(e.event_id for e in events)
    assert sidecar.refused_entries == 1  # offered once: not retried
    stats = exporter.stats()
    assert (stats.delivered, stats.failed, stats.retried) == (100, 1, 0)
    assert len([r for r in caplog.records if "Message was too large" in r.getMessage()]) == 1


def test_pubsub_entries_refused_for_a_transient_reason_are_retried_until_delivered(
    sidecar: DaprSidecar, dapr_env, pipeline: Exporter
) -> None:
    sidecar.register("events", "pubsub.kafka")
    sidecar.refuse_next_entries(7, "kafka: Failed to produce message: context deadline exceeded")
    dapr_env(sidecar, APPEVENTS_DAPR_MODE="pubsub", APPEVENTS_DAPR_PUBSUB="events")
    exporter = pipeline()
    events = numbered_events(60)

    publish_all(events)

    assert sorted(p.cloudevent["id"] for p in sidecar.published) == sorted(e.event_id for e in events)
    stats = exporter.stats()
    assert (stats.delivered, stats.failed, stats.retried) == (60, 0, 7)


def test_pubsub_mode_missing_component_is_skipped_with_one_warning(
    sidecar: DaprSidecar, dapr_env, pipeline: Exporter, caplog: pytest.LogCaptureFixture
) -> None:
    dapr_env(sidecar, APPEVENTS_DAPR_MODE="pubsub", APPEVENTS_DAPR_PUBSUB="events")
    exporter = pipeline()
    caplog.set_level(logging.WARNING)

    publish_all(numbered_events(10))

    assert exporter.stats().skipped_no_component == 10
    assert len([r for r in caplog.records if "'events'" in r.getMessage()]) == 1


# -- auth failures, secrets -------------------------------------------------------------------------------------
def test_no_token_means_nothing_is_sent_unauthenticated(
    sidecar: DaprSidecar, receiver: HttpReceiver, token_server: TokenServer, dapr_env, pipeline: Exporter
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    token_server.status = 503
    dapr_env(sidecar, token_server, APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S="1", APPEVENTS_AUTH_FAILURE_COOLDOWN_S="0")
    exporter = pipeline()

    publish_all(numbered_events(20))

    assert receiver.requests == []
    assert sidecar.binding_calls == []
    assert exporter.stats().auth_failures >= 1
    assert exporter.stats().returned == 20  # returned to the engine, which counts them failed (no spool)

    token_server.status = None  # the endpoint recovers: the next events go out, with the token
    publish_all(numbered_events(5))
    assert [r.headers["Authorization"] for r in receiver.requests] == [f"Bearer {token_server.issued[0]}"] * 5


def test_events_wait_for_the_token_endpoint_and_go_out_when_it_recovers(
    sidecar: DaprSidecar, receiver: HttpReceiver, token_server: TokenServer, dapr_env, pipeline: Exporter
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    token_server.status = 503
    dapr_env(sidecar, token_server)
    exporter = pipeline()
    events = numbered_events(20)
    for event in events:
        EventStore.publish(event)
    recover = threading.Timer(1.0, lambda: setattr(token_server, "status", None))
    recover.start()
    try:
        assert EventStore.flush_sync(timeout_s=30)
    finally:
        recover.join()

    assert sorted(ids_in(receiver.bodies())) == sorted(e.event_id for e in events)
    assert all(r.headers["Authorization"].startswith("Bearer tok-") for r in receiver.requests)
    assert exporter.stats().auth_failures >= 1
    assert exporter.stats().failed == 0


@pytest.mark.parametrize("mode", ["binding", "batch"])
def test_a_revoked_token_is_replaced_and_no_event_is_lost(
    sidecar: DaprSidecar,
    receiver: HttpReceiver,
    token_server: TokenServer,
    dapr_env,
    pipeline: Exporter,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar, token_server, APPEVENTS_DAPR_MODE=mode)
    exporter = pipeline()
    caplog.set_level(logging.WARNING)
    before = numbered_events(10)
    publish_all(before)  # token A is issued and accepted
    [token_a] = token_server.issued
    receiver.revoked.add(f"Bearer {token_a}")  # the identity provider revokes it: the endpoint now answers 401
    after = numbered_events(50, "order.shipped")

    publish_all(after)

    token_a, token_b = token_server.issued
    assert sorted(ids_in(receiver.bodies())) == sorted(e.event_id for e in [*before, *after])
    after_ids = {e.event_id for e in after}
    for request in receiver.accepted():
        if set(ids_in([request.body])) & after_ids:
            assert request.headers["Authorization"] == f"Bearer {token_b}"
    assert any(r.status == 401 for r in receiver.requests)  # the rejection did happen
    stats = exporter.stats()
    assert stats.failed == 0
    assert stats.unauthorized >= 1
    assert stats.delivered == 60
    assert len([r for r in caplog.records if "HTTP 401" in r.getMessage()]) == 1
    assert token_a not in caplog.text and token_b not in caplog.text


def test_a_401_is_final_when_the_header_provider_cannot_refresh(
    sidecar: DaprSidecar, receiver: HttpReceiver, dapr_env
) -> None:
    sidecar.register("eventstore", "bindings.http", receiver.url)
    receiver.revoked.add("ApiKey revoked-key")
    dapr_env(sidecar)
    exporter = DaprExporter(header_provider=StaticHeaderProvider({"Authorization": "ApiKey revoked-key"}))
    configure(AppEventsSettings(exporters=[]), exporters={"dapr": exporter})
    try:
        publish_all(numbered_events(4))
    finally:
        EventStore.shutdown(timeout_s=5)

    stats = exporter.stats()
    assert (stats.failed, stats.unauthorized, stats.retried, stats.delivered) == (4, 4, 0, 0)


def test_client_secret_and_token_never_appear_in_logs_or_exception_text(
    sidecar: DaprSidecar,
    receiver: HttpReceiver,
    token_server: TokenServer,
    dapr_env,
    pipeline: Exporter,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    sidecar.register("eventstore", "bindings.http", receiver.url)
    dapr_env(sidecar, token_server, APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S="0.5")
    exporter = pipeline()
    publish_all(numbered_events(10))  # a token is issued and used
    receiver.status = 401  # the endpoint rejects every token: logged, tokens dropped and fetched anew, given up
    publish_all(numbered_events(3))
    receiver.status = 200
    real_secret = token_server.client_secret
    token_server.client_secret = "rotated-elsewhere"  # our secret is now wrong: 401 from the token endpoint
    publish_all(numbered_events(3))

    assert exporter.stats().unauthorized >= 3
    assert exporter.stats().auth_failures >= 1
    assert token_server.hits >= 2
    texts = [caplog.text, capsys.readouterr().out, repr(exporter), str(exporter.stats())]
    texts += [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert any("rejected the client credentials" in t for t in texts)
    for text in texts:
        assert real_secret not in text
        for token in token_server.issued:
            assert token not in text


# -- entry points -----------------------------------------------------------------------------------------------
def test_entry_points_build_the_exporter_from_the_environment(sidecar: DaprSidecar, dapr_env) -> None:
    dapr_env(sidecar, APPEVENTS_DAPR_MODE="batch", APPEVENTS_EVENT_STORE_NAME="events-binding")
    [otel] = entry_points(group="opentelemetry_logs_exporter", name="appevents_dapr")
    [ours] = entry_points(group="appevents.exporters", name="dapr")
    assert ours.load() is create_dapr_exporter

    exporter = otel.load()()  # what OTEL_LOGS_EXPORTER=appevents_dapr does: no arguments

    assert isinstance(exporter, DaprExporter)
    assert exporter.binding == "events-binding"
    assert exporter.mode.value == "batch"
    assert sidecar.metadata_calls == 0  # construction talks to nobody
    exporter.shutdown()


def test_the_sending_threads_block_the_process_signals_whichever_thread_exports_first(
    sidecar: DaprSidecar, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the OpenTelemetry route the SDK's batch thread (or the application's own) exports first, and creates the
    pool's workers: they block the process's signals themselves."""
    sidecar.register("eventstore", "bindings.http", receiver.url)
    for name, value in sidecar.env().items():
        monkeypatch.setenv(name, value)
    exporter = DaprExporter(header_provider=None)
    try:
        outcome = exporter.export_events([encode_event(e) for e in numbered_events(4)])  # from this thread
        assert (outcome.failed, outcome.dropped, outcome.retry) == ([], [], [])
        workers = [thread for thread in threading.enumerate() if thread.name.startswith("appevents-dapr")]
        assert workers and all(leaves_process_signals_alone(worker) for worker in workers)
    finally:
        exporter.shutdown()
