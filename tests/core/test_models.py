"""Event validation: documented example events pass unchanged, bad input fails at construction or assignment
naming the field.

The size cap applies to the whole encoded event, not only ``data``; events read back from a store are not re-capped.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from appevents import ApplicationEventNames, Event, EventMetadata, _runtime, configure
from appevents._demo.events import example_events
from appevents._enrichment import enrich
from appevents._models import STORED_EVENT_CONTEXT
from appevents._settings import DEFAULT_MAX_EVENT_BYTES, AppEventsSettings
from support.json_values import json_values

FIVE_MIB = 5 * 1024 * 1024


def _error_locations(exc: ValidationError) -> list[tuple[object, ...]]:
    return [tuple(err["loc"]) for err in exc.errors()]


def _encoded_size(event: Event) -> int:
    return len(event.model_dump_json().encode())


@pytest.fixture
def small_cap() -> Iterator[int]:
    _runtime.set_max_event_bytes(2000)
    yield 2000
    _runtime.set_max_event_bytes(None)


@pytest.fixture
def default_cap() -> Iterator[int]:
    _runtime.set_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    yield DEFAULT_MAX_EVENT_BYTES
    _runtime.set_max_event_bytes(None)


DOCUMENTED_EXAMPLES = [  # the Atlan application-sdk's EventStore documentation, verbatim
    (
        "workflow.status_changed",
        {"workflow_id": "wf-123", "old_status": "running", "new_status": "completed", "duration_seconds": 1800},
    ),
    (
        "data.batch_processed",
        {"batch_id": "batch-456", "records_processed": 10000, "success_count": 9995, "error_count": 5},
    ),
    ("workflow.started", {"input_size": 3, "processing_mode": "batch"}),
    (
        "data_quality.alert",
        {"dataset_id": "ds-1", "alert_type": "high_null_percentage", "null_percentage": 12.5, "severity": "warning"},
    ),
    (
        "activity.progress",
        {"dataset_id": "ds-1", "processed_records": 1000, "total_records": 4000, "progress_percentage": 25.0},
    ),
    ("order.payment_processed", {"order_id": "o-1", "payment_status": "ok", "transaction_id": "t-77"}),
]


@pytest.mark.parametrize(("event_type", "data"), DOCUMENTED_EXAMPLES, ids=[t for t, _ in DOCUMENTED_EXAMPLES])
def test_documented_examples_are_accepted_unchanged(event_type: str, data: dict[str, object]) -> None:
    expected = json.loads(json.dumps(data))  # an independent copy: validation must not alter values or types
    event = Event(event_type=event_type, data=data)  # type: ignore[arg-type]
    assert event.data == expected
    assert [type(v) for v in event.data.values()] == [type(v) for v in expected.values()]
    assert json.loads(event.model_dump_json())["data"] == expected


def test_the_demo_publishes_valid_example_events() -> None:
    assert {e.event_type for e in example_events()} >= {t for t, _ in DOCUMENTED_EXAMPLES}
    lifecycle = Event(
        event_name=ApplicationEventNames.WORKFLOW_START.value,
        event_type="workflow.lifecycle",
        data={"workflow_name": "DataIngestion"},
    )
    assert lifecycle.event_name == "workflow_start"
    assert Event(event_type="application_events").event_type == "application_events"


@given(data=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_any_json_object_round_trips_exactly(data: dict[str, object]) -> None:
    event = Event(event_type="data.processed", data=data)  # type: ignore[arg-type]
    assert Event.model_validate_json(event.model_dump_json()) == event


@pytest.mark.parametrize(
    "bad_value",
    [float("nan"), float("inf"), -math.inf, b"bytes", object(), {1: "int key"}, (1, 2), {"x"}],
    ids=["nan", "inf", "-inf", "bytes", "object", "int-key", "tuple", "set"],
)
def test_non_json_data_is_rejected_naming_the_field(bad_value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Event(event_type="data.processed", data={"value": bad_value})  # type: ignore[dict-item]
    assert all(loc[:2] == ("data", "value") for loc in _error_locations(info.value))


@given(bad=st.sampled_from([float("nan"), float("inf"), b"x", object()]), depth=st.integers(0, 5))
def test_non_json_values_are_rejected_at_any_depth(bad: object, depth: int) -> None:
    value: object = bad
    for _ in range(depth):
        value = {"nested": [value]}
    with pytest.raises(ValidationError) as info:
        Event(event_type="data.processed", data={"root": value})  # type: ignore[dict-item]
    assert _error_locations(info.value)[0][:2] == ("data", "root")


@pytest.mark.parametrize(
    "bad", ["NaN", "Infinity", "-Infinity", "1e400", "9223372036854775808", "-9223372036854775809", "1" + "0" * 5000]
)
def test_numbers_json_consumers_cannot_read_are_refused_alike_from_python_and_from_json(bad: str) -> None:
    """Non-finite numbers and integers outside int64: refused naming the field by ``Event(...)`` and by
    ``model_validate_json`` (what the OTLP bridge reads), never stored as ``null`` nor echoed back."""
    text = '{"event_type": "a.b", "data": {"x": {"y": [1, ' + bad + "]}}}"
    with pytest.raises(ValidationError) as from_json:
        Event.model_validate_json(text)
    if len(bad) < 100:  # a 5,001-digit number is refused by the JSON parser itself, before any field
        assert _error_locations(from_json.value)[0][:4] == ("data", "x", "dict", "y")
    python_value = json.loads(bad.replace("1e400", "Infinity")) if not bad.startswith("1" + "0" * 10) else 10**5000
    with pytest.raises(ValidationError) as from_python:
        Event(event_type="a.b", data={"x": {"y": [1, python_value]}})
    message = str(from_python.value)  # printable: no 5,000-digit repr, no value echoed
    assert "data.x" in message and bad[:30] not in message
    assert Event(event_type="a.b", data={"x": 2**63 - 1, "y": -(2**63)}).data["x"] == 2**63 - 1


def test_cyclic_data_is_rejected() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValidationError) as info:
        Event(event_type="data.processed", data=cyclic)  # type: ignore[arg-type]
    assert "cyclic" in str(info.value)


def test_data_over_the_size_cap_is_rejected_with_the_limit_in_the_message() -> None:
    configure(AppEventsSettings(exporters=[], max_event_bytes=1024))
    Event(event_type="data.processed", data={"blob": "x" * 500})
    with pytest.raises(ValidationError) as info:
        Event(event_type="data.processed", data={"blob": "x" * 2000})
    message = str(info.value)
    assert "data" in message and "1024" in message and "APPEVENTS_MAX_EVENT_BYTES" in message


def test_the_cap_counts_the_whole_event_not_only_its_data(small_cap: int) -> None:
    data = {"blob": "x" * 1000}
    Event(event_type="data.processed", data=data)  # data alone is under the cap...
    with pytest.raises(ValidationError):  # ...but not with an event name as large
        Event(event_type="data.processed", event_name="n" * 1000, data=data)


def test_an_event_exactly_at_the_cap_is_accepted_and_one_byte_more_is_refused(small_cap: int) -> None:
    room = small_cap - _encoded_size(Event(event_type="a.b", event_name=""))
    assert _encoded_size(Event(event_type="a.b", event_name="x" * room)) == small_cap
    with pytest.raises(ValidationError, match=f"{small_cap + 1} bytes"):
        Event(event_type="a.b", event_name="x" * (room + 1))


def test_oversize_event_name_is_refused_at_construction(default_cap: int) -> None:
    with pytest.raises(ValidationError) as info:
        Event(event_type="a.b", event_name="x" * FIVE_MIB)
    message = str(info.value)
    size = _encoded_size(
        Event.model_validate({"event_type": "a.b", "event_name": "x" * FIVE_MIB}, context={STORED_EVENT_CONTEXT: True})
    )
    assert f"encodes to {size} bytes" in message
    assert f"limit of {default_cap} bytes" in message
    assert "largest field: event_name" in message
    assert "raise APPEVENTS_MAX_EVENT_BYTES or publish a reference" in message


@pytest.mark.parametrize("as_dict", [False, True], ids=["model", "dict"])
def test_oversize_metadata_field_is_refused(default_cap: int, as_dict: bool) -> None:
    fields = {"application_name": "x" * FIVE_MIB}
    metadata = fields if as_dict else EventMetadata(**fields)
    with pytest.raises(ValidationError) as info:
        Event(event_type="a.b", metadata=metadata)  # type: ignore[arg-type]
    message = str(info.value)
    assert "largest field: metadata.application_name" in message and str(default_cap) in message


def test_assignment_that_makes_the_event_too_large_is_refused(small_cap: int) -> None:
    event = Event(event_type="a.b", event_name="small", data={"k": 1})
    before, fields_set = event.model_dump(), set(event.model_fields_set)
    for field, value in [
        ("event_name", "x" * small_cap),
        ("data", {"blob": "x" * small_cap}),
        ("metadata", EventMetadata(workflow_id="x" * small_cap)),
    ]:
        with pytest.raises(ValidationError, match="APPEVENTS_MAX_EVENT_BYTES"):
            setattr(event, field, value)
        assert event.model_dump() == before, f"the refused {field} assignment changed the event"
        assert event.model_fields_set == fields_set
    event.event_name = "still assignable"
    assert event.event_name == "still assignable" and _encoded_size(event) <= small_cap


def test_stored_event_over_the_current_cap_is_read_back() -> None:
    _runtime.set_max_event_bytes(100_000)
    stored = Event(event_type="a.b", event_name="n" * 5000, data={"blob": "x" * 5000}).model_dump_json()
    _runtime.set_max_event_bytes(1000)
    try:
        read_back = Event.model_validate_json(stored, context={STORED_EVENT_CONTEXT: True})
        assert read_back.model_dump_json() == stored
        with pytest.raises(ValidationError, match="limit of 1000 bytes"):
            Event.model_validate_json(stored)  # without the context it is a new event, and capped
    finally:
        _runtime.set_max_event_bytes(None)


# Strings of any length up to several times the small cap: a short piece (escapes, multi-byte characters)
# repeated, so the encoded size in bytes differs from the length in characters.
long_texts = st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=4), st.integers(0, 600))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # the fixture only sets the cap
@given(
    event_name=st.none() | st.text() | long_texts,
    data=st.dictionaries(st.text(max_size=12), json_values | long_texts, max_size=4),
    application_name=st.none() | long_texts,
)
def test_an_event_is_built_if_and_only_if_it_encodes_within_the_cap(
    small_cap: int, event_name: str | None, data: dict[str, object], application_name: str | None
) -> None:
    fields = {
        "event_type": "data.processed",
        "event_name": event_name,
        "data": data,
        "metadata": {"application_name": application_name},
    }
    uncapped = _encoded_size(Event.model_validate(fields, context={STORED_EVENT_CONTEXT: True}))
    try:
        event = Event(**fields)  # type: ignore[arg-type]
    except ValidationError as exc:
        assert uncapped > small_cap, f"refused an event of {uncapped} bytes: {exc}"
        assert f"limit of {small_cap} bytes" in str(exc)
    else:
        assert _encoded_size(event) == uncapped <= small_cap


@given(
    event_type=st.one_of(
        st.text().filter(lambda s: not s or not s[0].islower() or not s.isascii()),
        st.from_regex(r"\A[a-z]+\.\Z"),
        st.from_regex(r"\A[a-z]+\.\.[a-z]+\Z"),
        st.from_regex(r"\A[a-z]+ [a-z]+\Z"),
        st.from_regex(r"\A[a-z]*[A-Z-][a-z]*\Z"),
    )
)
def test_event_types_that_are_not_domain_action_are_rejected(event_type: str) -> None:
    with pytest.raises(ValidationError) as info:
        Event(event_type=event_type)
    assert _error_locations(info.value)[0] == ("event_type",)


@given(st.from_regex(r"\A[a-z][a-z0-9_]{0,20}(\.[a-z0-9_]{1,20}){0,3}\Z"))
def test_domain_action_event_types_are_accepted(event_type: str) -> None:
    assert Event(event_type=event_type).event_type == event_type


@given(
    event_type=st.from_regex(r"\A[a-z][a-z0-9_]{0,20}(\.[a-z0-9_]{1,20}){0,3}\Z"), end=st.sampled_from(["\n", "\r\n"])
)
def test_event_type_with_trailing_newline_is_refused(event_type: str, end: str) -> None:
    with pytest.raises(ValidationError) as info:
        Event(event_type=event_type + end)
    assert _error_locations(info.value) == [("event_type",)]
    assert "domain.action" in str(info.value)


def test_event_type_longer_than_255_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        Event(event_type="a" * 256)
    assert _error_locations(info.value)[0] == ("event_type",)


def test_event_id_is_a_generated_uuid_unless_given() -> None:
    first, second = Event(event_type="a.b"), Event(event_type="a.b")
    assert first.event_id != second.event_id
    assert uuid.UUID(first.event_id).version == 4
    given_id = str(uuid.uuid4())
    assert Event(event_type="a.b", event_id=given_id).event_id == given_id
    with pytest.raises(ValidationError) as info:
        Event(event_type="a.b", event_id="not-a-uuid")
    assert _error_locations(info.value)[0] == ("event_id",)


def test_unknown_fields_are_rejected_rather_than_dropped() -> None:
    with pytest.raises(ValidationError):
        Event(event_type="a.b", payload={})  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        EventMetadata(workflowid="x")  # type: ignore[call-arg]


def test_assignment_of_a_bad_event_type_is_refused() -> None:
    bad = Event(event_type="a.b")
    with pytest.raises(ValidationError) as info:
        bad.event_type = "Bad Type"
    assert _error_locations(info.value) == [("event_type",)]
    assert "domain.action" in str(info.value)
    assert bad.event_type == "a.b"


@pytest.mark.parametrize(
    ("field", "value"),
    [("event_id", "not-a-uuid"), ("data", {"value": float("nan")}), ("metadata", {"workflowid": "x"})],
)
def test_assignment_of_any_bad_field_is_refused(field: str, value: object) -> None:
    event = Event(event_type="a.b")
    before = event.model_dump()
    with pytest.raises(ValidationError) as info:
        setattr(event, field, value)
    assert _error_locations(info.value)[0][0] == field
    assert event.model_dump() == before


def test_assignment_to_a_metadata_field_is_validated() -> None:
    metadata = Event(event_type="a.b").metadata
    with pytest.raises(ValidationError) as info:
        metadata.attempt = "first"  # type: ignore[assignment]
    assert _error_locations(info.value) == [("attempt",)]
    metadata.attempt = 2
    assert metadata.attempt == 2


def test_enrichment_still_fills_metadata_without_assignment_validation() -> None:
    event = Event(event_type="order.received", metadata=EventMetadata(tenant_id="caller"))
    enrich(event, AppEventsSettings(exporters=[], application_name="orders", tenant_id="settings"))
    assert event.metadata.application_name == "orders"
    assert event.metadata.tenant_id == "caller"  # filled gaps only
    assert {"application_name", "topic_name"} <= event.metadata.model_fields_set
