"""Event validation: good seed events pass unchanged, bad input fails at construction naming the field."""

from __future__ import annotations

import json
import math
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from appevents import ApplicationEventNames, Event, EventMetadata, configure
from appevents.demo import seed_example_events
from appevents.settings import AppEventsSettings

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _error_locations(exc: ValidationError) -> list[tuple[object, ...]]:
    return [tuple(err["loc"]) for err in exc.errors()]


SEED_EXAMPLES = [  # the seed's documentation, verbatim
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


@pytest.mark.parametrize(("event_type", "data"), SEED_EXAMPLES, ids=[t for t, _ in SEED_EXAMPLES])
def test_seed_examples_are_accepted_unchanged(event_type: str, data: dict[str, object]) -> None:
    expected = json.loads(json.dumps(data))  # an independent copy: validation must not alter values or types
    event = Event(event_type=event_type, data=data)  # type: ignore[arg-type]
    assert event.data == expected
    assert [type(v) for v in event.data.values()] == [type(v) for v in expected.values()]
    assert json.loads(event.model_dump_json())["data"] == expected


def test_the_demo_publishes_valid_seed_events() -> None:
    assert {e.event_type for e in seed_example_events()} >= {t for t, _ in SEED_EXAMPLES}
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


def test_cyclic_data_is_rejected() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValidationError) as info:
        Event(event_type="data.processed", data=cyclic)  # type: ignore[arg-type]
    assert "cyclic" in str(info.value)


def test_data_over_the_size_cap_is_rejected_with_the_limit_in_the_message() -> None:
    configure(AppEventsSettings(exporters=[], max_event_bytes=1024))
    Event(event_type="data.processed", data={"blob": "x" * 900})
    with pytest.raises(ValidationError) as info:
        Event(event_type="data.processed", data={"blob": "x" * 2000})
    message = str(info.value)
    assert "data" in message and "1024" in message and "APPEVENTS_MAX_EVENT_BYTES" in message


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
