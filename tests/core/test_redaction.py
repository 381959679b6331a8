"""Redaction (``APPEVENTS_REDACT_KEYS``): credential-like keys of ``data`` are hidden at publish, at any depth and
in any case, from every destination — and nothing is copied when there is nothing to hide."""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

from appevents import Event, EventStore, configure
from appevents._records import EVENT_ID_ATTRIBUTE, EVENT_NAME_ATTRIBUTE, TOPIC_ATTRIBUTE
from appevents._redaction import MAX_DEPTH, REDACTED, redact, redact_keys, redactor_of
from appevents._settings import DEFAULT_REDACT_KEYS, AppEventsSettings
from appevents._sqlite_log import LocalEventLog
from appevents.testing import InMemoryEventExporter

DEFAULT_KEYS = redact_keys(DEFAULT_REDACT_KEYS)
SECRET = "s3cr3t-value-7f1c9e"  # distinctive: found anywhere means leaked


def _sensitive_data() -> dict[str, Any]:
    """Secrets at the top, in a nested object, in objects inside an array, in mixed case."""
    return {
        "order_id": "o-1",
        "Password": SECRET,
        "customer": {"name": "Ada", "AUTHORIZATION": f"Bearer {SECRET}", "address": {"city": "Paris"}},
        "attempts": [{"n": 1, "Api_Key": SECRET}, {"n": 2, "nested": [{"refresh_token": SECRET}]}, "plain"],
    }


def _expected_redacted() -> dict[str, Any]:
    return {
        "order_id": "o-1",
        "Password": REDACTED,
        "customer": {"name": "Ada", "AUTHORIZATION": REDACTED, "address": {"city": "Paris"}},
        "attempts": [{"n": 1, "Api_Key": REDACTED}, {"n": 2, "nested": [{"refresh_token": REDACTED}]}, "plain"],
    }


def _memory(**overrides: Any) -> InMemoryEventExporter:
    memory = InMemoryEventExporter()
    configure(AppEventsSettings(exporters=[], **overrides), exporters={"memory": memory})
    return memory


# -- the function ------------------------------------------------------------------------------------------------
def test_keys_are_redacted_at_any_depth_in_objects_and_in_objects_inside_arrays() -> None:
    assert redact(_sensitive_data(), DEFAULT_KEYS) == _expected_redacted()


def test_keys_match_case_insensitively() -> None:
    data = {"PASSWORD": 1, "Authorization": 2, "X-Api-Key": 3, "Set-Cookie": 4, "passWD": 5, "other": 6}
    assert redact(data, DEFAULT_KEYS) == {k: (6 if k == "other" else REDACTED) for k in data}
    # A non-ASCII key that lower-cases to a configured name is a match too (str.lower, as documented).
    assert redact({"To\u212aen": "x"}, DEFAULT_KEYS) == {"To\u212aen": REDACTED}  # KELVIN SIGN lowers to "k"


def test_a_matching_key_hides_its_whole_value_whatever_it_is() -> None:
    data = {"secret": {"inner": SECRET, "n": [1, 2]}, "token": [SECRET], "cookie": None, "api_key": 42}
    assert redact(data, DEFAULT_KEYS) == dict.fromkeys(data, REDACTED)


def test_values_are_not_matched_only_keys() -> None:
    data = {"note": "password", "tags": ["token", "secret"], "password_hint": "x", "my_token": "y"}
    assert redact(data, DEFAULT_KEYS) is data


def test_data_without_sensitive_keys_is_returned_as_the_same_object() -> None:
    data = {"order_id": "o-1", "items": [{"sku": "A", "qty": 2}, [1, {"deep": {"x": None}}]], "n": 1.5}
    snapshot = copy.deepcopy(data)
    assert redact(data, DEFAULT_KEYS) is data
    assert data == snapshot
    assert redact({}, DEFAULT_KEYS) == {}


def test_the_callers_data_is_not_mutated_and_untouched_branches_are_shared() -> None:
    data = _sensitive_data()
    snapshot = copy.deepcopy(data)
    redacted = redact(data, DEFAULT_KEYS)
    assert data == snapshot
    assert redacted is not data
    assert redacted["customer"] is not data["customer"]  # on the way to a redacted value: copied
    assert redacted["customer"]["address"] is data["customer"]["address"]  # elsewhere: shared
    assert redacted["attempts"][1]["nested"] is not data["attempts"][1]["nested"]


def test_tuples_and_dict_subclasses_put_in_place_are_scanned_too() -> None:
    data: dict[str, Any] = {"pairs": ({"token": SECRET},), "ordered": OrderedDict(secret=SECRET, keep=1)}
    assert redact(data, DEFAULT_KEYS) == {"pairs": [{"token": REDACTED}], "ordered": {"secret": REDACTED, "keep": 1}}
    assert data["pairs"][0]["token"] == SECRET and data["ordered"]["secret"] == SECRET


def test_an_empty_key_set_redacts_nothing() -> None:
    data = _sensitive_data()
    assert redact(data, frozenset()) is data


def test_a_key_seen_safe_for_one_key_set_is_still_redacted_for_another() -> None:
    assert redact({"user": "ada"}, DEFAULT_KEYS) == {"user": "ada"}  # "user" is now known safe for the defaults
    assert redact({"user": "ada"}, redact_keys(["User"])) == {"user": REDACTED}
    assert redact({"a": {"user": "ada"}}, redact_keys(["user"])) == {"a": {"user": REDACTED}}


def test_nesting_down_to_max_depth_is_redacted_and_deeper_data_raises() -> None:
    def nested(depth: int, leaf: dict[str, Any]) -> dict[str, Any]:
        """``leaf`` ``depth`` containers below the top level (objects and arrays in turn)."""
        data: Any = leaf
        for level in range(depth - 1, 0, -1):
            data = [data] if level % 2 else {"level": data}
        return {"top": data}

    # MAX_DEPTH levels below the top: scanned (with an explicit stack, no recursion).
    deepest = nested(MAX_DEPTH, {"token": SECRET, "ok": 1})
    assert SECRET not in json.dumps(redact(deepest, DEFAULT_KEYS))
    fine = nested(MAX_DEPTH, {"ok": 1})
    assert redact(fine, DEFAULT_KEYS) is fine
    for too_deep in (nested(MAX_DEPTH + 1, {"ok": 1}), {"password": 1, "x": nested(MAX_DEPTH, {"ok": 1})}):
        with pytest.raises(ValueError, match="nested deeper than"):
            redact(too_deep, DEFAULT_KEYS)


def test_cyclic_data_raises_instead_of_looping() -> None:
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["self"] = cyclic
    cyclic["again"] = [cyclic]
    with pytest.raises(ValueError, match="cyclic"):
        redact(cyclic, DEFAULT_KEYS)
    cyclic["password"] = SECRET  # a match first: the copying path ends too
    with pytest.raises(ValueError, match="cyclic"):
        redact(cyclic, DEFAULT_KEYS)


def test_redact_keys_are_stripped_lower_cased_and_empty_names_dropped() -> None:
    assert redact_keys([" Password", "SSN ", "", "  "]) == frozenset({"password", "ssn"})


def test_the_redactor_is_made_once_per_settings_object_and_none_when_off() -> None:
    settings = AppEventsSettings(redact_keys=["Pin"])
    redactor = redactor_of(settings)
    assert redactor is not None and redactor({"PIN": 1, "n": 2}) == {"PIN": REDACTED, "n": 2}
    assert redactor_of(settings) is redactor
    other = redactor_of(AppEventsSettings(redact_keys=["Pin"]))  # another pipeline's settings
    assert other is not None and other is not redactor
    settings.redact_keys = ["ssn"]  # a new list is seen
    changed = redactor_of(settings)
    assert changed is not None and changed({"pin": 1, "SSN": 2}) == {"pin": 1, "SSN": REDACTED}
    assert redactor_of(AppEventsSettings(redact_keys=[])) is None
    assert redactor_of(AppEventsSettings(redact_keys=[" ", ""])) is None


_json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
_json_keys = st.sampled_from(["Password", "token", "TOKEN", "name", "id", "Set-Cookie", "x", "secretive"])
_json = st.recursive(
    _json_leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_json_keys, children, max_size=4),
    max_leaves=20,
)


def _reference(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if k.lower() in keys else _reference(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [_reference(v, keys) for v in value]
    return value


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(_json_keys, _json, max_size=5))
def test_redaction_agrees_with_a_plain_recursive_definition(data: dict[str, Any]) -> None:
    snapshot = copy.deepcopy(data)
    redacted = redact(data, DEFAULT_KEYS)
    assert redacted == _reference(snapshot, DEFAULT_KEYS)
    assert data == snapshot
    assert (redacted is data) == (redacted == snapshot)


# -- at publish: every destination sees the redacted data --------------------------------------------------------
def _files_of(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


async def test_the_local_log_stores_redacted_data(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    configure(AppEventsSettings(exporters=["local"], local_path=db))
    event = Event(event_type="order.received", data=_sensitive_data())
    await EventStore.publish_event(event)
    assert await EventStore.flush(5)
    [stored] = list(LocalEventLog(db))
    assert stored.data == _expected_redacted()
    EventStore.shutdown()
    assert SECRET.encode() not in _files_of(db)  # nor anywhere in the database files (WAL included)


def test_the_memory_exporter_receives_redacted_data() -> None:
    memory = _memory()
    EventStore.publish(Event(event_type="order.received", data=_sensitive_data()))
    assert EventStore.flush_sync(5)
    [event] = memory.events
    assert event.data == _expected_redacted()


def test_otel_processors_and_exporters_get_a_redacted_log_record_body() -> None:
    by_processor, by_exporter = InMemoryLogRecordExporter(), InMemoryLogRecordExporter()
    configure(
        AppEventsSettings(exporters=[]),
        exporters={"otel": by_exporter},
        processors=[SimpleLogRecordProcessor(by_processor)],
    )
    EventStore.publish(Event(event_type="order.received", data=_sensitive_data()))
    assert EventStore.flush_sync(5)
    records: list[ReadableLogRecord] = [*by_processor.get_finished_logs(), *by_exporter.get_finished_logs()]
    assert len(records) == 2
    for record in records:
        body = record.log_record.body
        assert isinstance(body, str)
        assert json.loads(body)["data"] == _expected_redacted()
        assert SECRET not in body
        assert SECRET not in str(record.log_record.attributes)


def test_the_span_event_carries_no_data_at_all() -> None:
    configure(AppEventsSettings(exporters=[]), exporters={"memory": InMemoryEventExporter()})
    tracer = TracerProvider().get_tracer("test")
    event = Event(event_type="order.received", event_name="activity_end", data=_sensitive_data())
    with tracer.start_as_current_span("handle-order") as span:
        EventStore.publish(event)
    [span_event] = span.events  # type: ignore[attr-defined]
    assert set(span_event.attributes) <= {EVENT_ID_ATTRIBUTE, EVENT_NAME_ATTRIBUTE, TOPIC_ATTRIBUTE}
    assert SECRET not in repr(dict(span_event.attributes))


async def test_the_durable_spool_stores_redacted_data(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    memory = _memory(spool_path=spool)
    await EventStore.publish_event(Event(event_type="order.received", data=_sensitive_data()), wait=True)
    assert await EventStore.flush(5)
    assert memory.events[0].data == _expected_redacted()
    EventStore.shutdown()
    assert SECRET.encode() not in _files_of(spool)


def test_after_publish_the_event_shows_the_redacted_view_and_the_callers_dict_is_unchanged() -> None:
    _memory()
    event = Event(event_type="order.received", data=_sensitive_data())
    callers = event.data
    snapshot = copy.deepcopy(callers)
    assert EventStore.publish(event)
    assert callers == snapshot  # the dict the caller holds still has its values
    assert event.data == _expected_redacted()  # the event, as every destination saw it
    assert SECRET not in event.model_dump_json()


def test_an_event_with_no_sensitive_keys_is_published_with_the_identical_data_object() -> None:
    memory = _memory()
    event = Event(event_type="order.received", data={"order_id": "o-1", "lines": [{"sku": "A", "qty": 2}]})
    data = event.data
    nested = data["lines"]
    assert EventStore.publish(event)
    assert event.data is data and event.data["lines"] is nested
    assert EventStore.flush_sync(5)
    assert memory.events[0].data == {"order_id": "o-1", "lines": [{"sku": "A", "qty": 2}]}


def test_an_empty_APPEVENTS_REDACT_KEYS_turns_redaction_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_REDACT_KEYS", "")
    assert AppEventsSettings().redact_keys == []
    memory = InMemoryEventExporter()
    configure(AppEventsSettings(exporters=[]), exporters={"memory": memory})
    event = Event(event_type="order.received", data=_sensitive_data())
    data = event.data
    EventStore.publish(event)
    assert EventStore.flush_sync(5)
    assert memory.events[0].data == _sensitive_data()
    assert event.data is data


def test_a_custom_APPEVENTS_REDACT_KEYS_list_replaces_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_REDACT_KEYS", "SSN, card_number")
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "none")
    memory = InMemoryEventExporter()
    configure(exporters={"memory": memory})  # settings read from the environment
    data = {"password": "kept", "ssn": "123-45-6789", "card": {"Card_Number": "4111"}}
    EventStore.publish(Event(event_type="order.received", data=data))
    assert EventStore.flush_sync(5)
    assert memory.events[0].data == {"password": "kept", "ssn": REDACTED, "card": {"Card_Number": REDACTED}}


def test_redaction_keys_in_code_settings_are_applied_per_pipeline() -> None:
    memory = _memory(redact_keys=["pin"])
    EventStore.publish(Event(event_type="card.used", data={"pin": "1234", "token": "t"}))
    assert EventStore.flush_sync(5)
    assert memory.events[0].data == {"pin": REDACTED, "token": "t"}
    memory = _memory()  # a new pipeline, the default keys again
    EventStore.publish(Event(event_type="card.used", data={"pin": "1234", "token": "t"}))
    assert EventStore.flush_sync(5)
    assert memory.events[0].data == {"pin": "1234", "token": REDACTED}


def test_data_made_too_deep_in_place_is_refused_at_publish_not_published_unscanned() -> None:
    memory = _memory()
    event = Event(event_type="order.received", data={"ok": 1})
    deep: dict[str, Any] = {"token": SECRET}
    for _ in range(MAX_DEPTH + 5):
        deep = {"d": deep}
    event.data["deep"] = deep  # in place: not validated
    assert EventStore.publish(event) is False
    assert EventStore.unpublished_count() == 1
    assert EventStore.flush_sync(5)
    assert memory.events == []
