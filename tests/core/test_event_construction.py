"""``Event(...)``'s fast path against pydantic's own validation, and what publishing checks of the data again.

``Event(event_type=..., data=...)`` builds the event without pydantic's model validation when the values have the
exact types the fields hold (``_models._built_fast``); ``Event.model_validate`` still goes through pydantic. Both
must accept the same inputs, build the same event and raise the same errors. Publishing encodes ``data`` again and
validates it when it changed in place since (``checked_data_json``), and builds the event's JSON from its parts
(``event_json``): both must give what pydantic's serializer gives.
"""

from __future__ import annotations

import datetime
import enum
import functools
import logging
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pydantic_core
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from appevents import Event, EventMetadata, EventStore, _runtime, configure
from appevents._enrichment import DEFAULT_ENRICHERS, enrich_by_default
from appevents._models import DATA_JSON_KEY, _empty_metadata, checked_data_json, event_json
from appevents._settings import AppEventsSettings
from appevents.testing import InMemoryEventExporter
from support.json_values import json_scalars


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


#: Values an event's data may not hold, or holds only after conversion: each must get the same answer both ways.
odd_scalars = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        2**63,
        -(2**63) - 1,
        2**70,
        b"bytes",
        datetime.datetime(2026, 1, 1),
        (1, 2),
        {1, 2},
        object(),
        Colour.RED,
        Level.HIGH,
        "1234567890123456789012",
    ]
)
values = st.recursive(
    json_scalars | odd_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.dictionaries(st.integers(0, 3), children, min_size=1, max_size=2)
        | st.dictionaries(st.text(max_size=4), children, max_size=2).map(OrderedDict)
    ),
    max_leaves=12,
)


class Kind(enum.StrEnum):
    ORDER = "order.received"


event_types = st.sampled_from(
    ["order.received", "a.b", "Order.Received", "a..b", "a.b\n", "x" * 256, "data_quality.alert", Kind.ORDER, 7, None]
)
ID = "0f0e0d0c-0b0a-4908-8706-050403020100"
event_ids = st.sampled_from(
    [ID, ID.upper(), "{" + ID + "}", "urn:uuid:" + ID, ID.replace("-", ""), "not-a-uuid", "", 12, None]
)
metadatas = st.sampled_from(
    [None, {}, {"tenant_id": "t", "attempt": 2}, {"attempt": "two"}, {"unknown": 1}, "not metadata"]
).map(lambda m: m if not isinstance(m, dict) or m.get("attempt") != 2 else EventMetadata(**m))


@pytest.fixture(autouse=True)
def _default_cap() -> Iterator[None]:
    _runtime.set_max_event_bytes(None)
    yield
    _runtime.set_max_event_bytes(None)


def _outcome(build: Any) -> tuple[str, Any]:
    try:
        event = build()
    except ValidationError as exc:
        return "error", [(e["type"], e["loc"], e["msg"]) for e in exc.errors(include_url=False)]
    return "event", event


def _kinds(value: Any) -> Any:
    """``value`` with every leaf replaced by its exact type: two events hold the same data only if these agree."""
    if isinstance(value, dict):
        return (type(value), {k: _kinds(v) for k, v in value.items()})
    if isinstance(value, list):
        return (type(value), [_kinds(v) for v in value])
    return type(value)


def assert_same(fast: Event, slow: Event) -> None:
    assert fast.__dict__["data"] == slow.__dict__["data"]
    assert _kinds(fast.data) == _kinds(slow.data)
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.__pydantic_private__ == slow.__pydantic_private__
    assert fast == slow
    assert repr(fast) == repr(slow)
    assert dict(fast) == dict(slow)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    event_type=event_types,
    data=st.dictionaries(st.text(max_size=8), values, max_size=5),
    event_name=st.none() | st.text(max_size=6) | st.just(5),
    event_id=event_ids,
    metadata=metadatas,
    extra=st.sampled_from([{}, {"unknown_field": 1}]),
)
def test_the_fast_path_accepts_refuses_and_builds_exactly_as_pydantic(
    event_type: str,
    data: dict[str, Any],
    event_name: str | None,
    event_id: str | None,
    metadata: Any,
    extra: dict[str, Any],
) -> None:
    values = {"event_type": event_type, "data": data, "event_name": event_name, "event_id": event_id or ID, **extra}
    if metadata is not None:
        values["metadata"] = metadata
    kind, fast = _outcome(lambda: Event(**values))
    slow_kind, slow = _outcome(lambda: Event.model_validate(values))
    assert kind == slow_kind
    if kind == "error":
        assert fast == slow
    else:
        assert_same(fast, slow)


def test_the_common_call_takes_the_fast_path_and_keeps_the_data_json() -> None:
    event = Event(event_type="order.received", data={"order_id": "o-1", "total": 12.5, "items": [1, 2]})
    assert event.__dict__[DATA_JSON_KEY] == pydantic_core.to_json(event.data)
    assert event.model_fields_set == {"event_type", "data"}
    # pydantic's own validation keeps nothing of the kind (model_validate does not go through Event.__init__).
    assert DATA_JSON_KEY not in Event.model_validate({"event_type": "order.received"}).__dict__


def test_defaults_are_fresh_per_event_and_equal_pydantics() -> None:
    first, second = Event(event_type="a.b"), Event(event_type="a.b")
    assert first.metadata is not second.metadata and first.data is not second.data
    assert first.event_id != second.event_id
    made = _empty_metadata()
    assert made == EventMetadata() and made.model_fields_set == set() and made.__pydantic_extra__ is None
    made.tenant_id = "t"  # assignment validation works on it
    with pytest.raises(ValidationError):
        made.attempt = "not a number"  # type: ignore[assignment]


def test_data_is_copied_at_construction_as_pydantic_copies_it() -> None:
    nested = {"list": [1, {"x": 1}]}
    event = Event(event_type="a.b", data=nested)
    nested["list"].append(2)
    nested["list"][1]["x"] = 99  # type: ignore[index]
    nested["new"] = 1  # type: ignore[assignment]
    assert event.data == {"list": [1, {"x": 1}]}


@pytest.mark.parametrize("metadata_given", [False, True])
def test_the_size_cap_counts_the_whole_encoded_event_on_the_fast_path(metadata_given: bool) -> None:
    metadata = EventMetadata(application_name='quote " and \\ and é', tenant_id="t") if metadata_given else None
    extra = {"metadata": metadata} if metadata_given else {}
    name = 'name with "quotes" \n and ünïcode'
    size = len(Event(event_type="a.b", event_name=name, data={"k": "v" * 100}, **extra).model_dump_json().encode())
    _runtime.set_max_event_bytes(size)
    assert DATA_JSON_KEY in Event(event_type="a.b", event_name=name, data={"k": "v" * 100}, **extra).__dict__
    _runtime.set_max_event_bytes(size - 1)
    with pytest.raises(ValidationError, match=f"the event encodes to {size} bytes, over the limit of {size - 1}"):
        Event(event_type="a.b", event_name=name, data={"k": "v" * 100}, **extra)


@settings(max_examples=200, deadline=None)
@given(
    data=st.dictionaries(st.text(max_size=8), values, max_size=4),
    event_name=st.none() | st.text(max_size=10),
    strings=st.lists(st.text(max_size=10), min_size=3, max_size=3),
)
def test_the_json_publishing_builds_is_pydantics(
    data: dict[str, Any], event_name: str | None, strings: list[str]
) -> None:
    try:
        event = Event(event_type="a.b", event_name=event_name, data=data)
    except ValidationError:
        return
    event.metadata.__dict__.update(workflow_id=strings[0], topic_name=strings[1], trace_id=strings[2], attempt=7)
    assert event_json(event, checked_data_json(event)) == event.model_dump_json().encode()


@pytest.fixture
def memory() -> Iterator[InMemoryEventExporter]:
    exporter = InMemoryEventExporter()
    configure(AppEventsSettings(exporters=[], application_name="app"), exporters={"memory": exporter})
    yield exporter
    EventStore.shutdown()


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (datetime.datetime(2026, 1, 1), "data.k"),
        ((1, 2), "data.k"),
        (float("nan"), "data.k"),
        (float("inf"), "data.k"),
        (2**64, "data.k"),
        (b"x", "data.k"),
        ({1: "a"}, "data.k[1].[key]"),
        ([1, {"x": {2, 3}}], "data.k[1].x"),
        (object(), "data.k"),
    ],
)
def test_data_changed_in_place_into_what_is_not_json_is_refused_at_publish_naming_the_field(
    memory: InMemoryEventExporter, caplog: pytest.LogCaptureFixture, value: Any, path: str
) -> None:
    event = Event(event_type="a.b", data={"k": "v", "other": 1})
    event.data["k"] = value
    with caplog.at_level(logging.ERROR, logger="appevents"):
        assert EventStore.publish(event) is False
        assert EventStore.publish(event) is False
    assert EventStore.unpublished_count() == 2
    logged = [r.getMessage() for r in caplog.records if "changed in place" in r.getMessage()]
    assert len(logged) == 1 and path in logged[0], logged  # once, naming the field; never the value
    assert repr(value) not in logged[0]
    assert EventStore.publish(Event(event_type="a.b", data={"k": "fine"}))
    assert EventStore.flush_sync(5)
    assert [e.data for e in memory.events] == [{"k": "fine"}]
    # Refused at the door, the two never entered the pipeline's accounting; the one taken is delivered.
    stats = EventStore.stats()["memory"]
    assert (stats.accepted, stats.delivered, stats.failed, stats.dropped, stats.pending) == (1, 1, 0, 0, 0)


def test_data_changed_in_place_into_other_json_is_published_as_it_is_now(memory: InMemoryEventExporter) -> None:
    event = Event(event_type="a.b", data={"k": "v", "nested": {"list": [1]}})
    event.data["k"] = "changed"
    event.data["nested"]["list"].append({"deep": 2.5})  # type: ignore[union-attr]
    assert EventStore.publish(event)
    assert EventStore.flush_sync(5)
    assert memory.events[0].data == {"k": "changed", "nested": {"list": [1, {"deep": 2.5}]}}
    # The new JSON is what the event keeps now: publishing again reuses it.
    assert event.__dict__[DATA_JSON_KEY] == pydantic_core.to_json(event.data)


def test_events_pydantic_built_are_checked_and_published_alike(memory: InMemoryEventExporter) -> None:
    built = Event.model_validate({"event_type": "a.b", "data": {"k": [1, 2]}})
    constructed = Event.model_construct(event_type="a.b", data={"k": (1, 2)})  # no validation at all
    assert EventStore.publish(built)
    assert EventStore.publish(constructed) is False  # a tuple is not JSON: model_construct does not get it through
    assert EventStore.flush_sync(5)
    assert [e.data for e in memory.events] == [{"k": [1, 2]}]


def test_default_enrichment_in_one_call_fills_what_the_steps_fill() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    settings_ = AppEventsSettings(application_name="app", tenant_id="tenant", topic_prefix="p.")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("span") as span:
        stepwise, fused = Event(event_type="a.b"), Event(event_type="a.b")
        fused.metadata.workflow_id = "kept"
        stepwise.metadata.workflow_id = "kept"
        for step in DEFAULT_ENRICHERS:
            step(stepwise, settings_)
        enrich_by_default(fused, settings_, None, span)
    assert fused.metadata.model_dump() == stepwise.metadata.model_dump()
    assert fused.metadata.model_fields_set == stepwise.metadata.model_fields_set
    assert fused.metadata.trace_id is not None and fused.metadata.topic_name == "p.a.b"


def test_a_subclass_is_built_by_pydantic_with_its_own_fields_and_rules() -> None:
    from pydantic import field_validator

    class OrderEvent(Event):
        order_id: str = "none"

        @field_validator("data")
        @classmethod
        def _needs_order(cls, value: dict[str, Any]) -> dict[str, Any]:
            if "order" not in value:
                raise ValueError("an order event needs data.order")
            return value

    event = OrderEvent(event_type="order.received", data={"order": 1}, order_id="o-1")
    assert event.order_id == "o-1" and event.model_dump()["order_id"] == "o-1"
    assert OrderEvent(event_type="order.received", data={"order": 1}).order_id == "none"
    with pytest.raises(ValidationError, match=r"needs data\.order"):
        OrderEvent(event_type="order.received", data={})


@pytest.mark.parametrize(
    "values",
    [
        {"event_type": "a.b", "data": {"k": "\udcff"}},  # a lone surrogate: not encodable
        {"event_type": "a.b", "event_name": "\udcff"},
        {"event_type": "a.b", "data": {"\ud800": 1}},  # as a key: pydantic's serializer writes U+FFFD
        {"event_type": "a.b", "data": {"k": functools.reduce(lambda inner, _: [inner], range(254), [])}},
    ],
    ids=["surrogate-value", "surrogate-name", "surrogate-key", "nested-254"],
)
def test_what_does_not_encode_gets_pydantics_answer(values: dict[str, Any]) -> None:
    values = {**values, "event_id": ID}
    kind, fast = _outcome(lambda: Event(**values))
    slow_kind, slow = _outcome(lambda: Event.model_validate(values))
    assert kind == slow_kind
    if kind == "event":
        assert fast.model_dump_json() == slow.model_dump_json()
    else:
        assert fast == slow


def test_a_key_only_pydantics_serializer_writes_is_published_as_it_writes_it(memory: InMemoryEventExporter) -> None:
    event = Event(event_type="a.b", data={"\ud800": 1, "k": "v"})
    expected = event.model_dump_json()
    assert EventStore.publish(event)
    assert EventStore.flush_sync(5)
    assert memory.events[0].data == Event.model_validate_json(expected).data
    assert memory.events[0].data["k"] == "v"


def test_an_event_id_is_drawn_once_per_event_whichever_way_it_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[str] = []
    real = _runtime.random_uuid4

    def counting() -> str:  # under both paths' default: _runtime.new_event_id
        drawn.append(real())
        return drawn[-1]

    monkeypatch.setattr(_runtime, "random_uuid4", counting)
    fast = Event(event_type="a.b", data={"k": 1})
    assert drawn == [fast.event_id]
    slow = Event(event_type="a.b", data={"\ud800": 1})  # built by pydantic after the fast path gave up
    assert drawn == [fast.event_id, slow.event_id]


def test_an_event_rebuilt_from_its_own_dict_is_equal() -> None:
    event = Event(event_type="a.b", data={"k": [1, 2]}, event_name="n")
    assert Event(**vars(event)) == event


def test_a_replacement_encoding_to_the_validated_json_is_published_as_that_json(
    memory: InMemoryEventExporter,
) -> None:
    event = Event(event_type="a.b", data={"k": [1, 2]})
    event.data["k"] = (1, 2)  # type: ignore[assignment]  # the same JSON as the list validated at construction
    assert EventStore.publish(event)
    assert EventStore.flush_sync(5)
    assert memory.events[0].data == {"k": [1, 2]}
