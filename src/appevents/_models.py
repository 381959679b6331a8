"""The event model: what a caller publishes and what every exporter receives.

Names and fields follow the Atlan application-sdk's ``application_sdk.interceptors.models`` (its ``EventStore``'s
model), so existing call sites keep working; fields we add (``event_id``, ``tenant_id``, ``trace_id``, ``span_id``,
``sdk_version``) are additions, never renames.

What is validated, and when — a bad value raises :class:`pydantic.ValidationError` naming the field and the rule:

* At construction (``Event(...)``, ``EventMetadata(...)``, ``model_validate``): every field's type and rule, and
  the size of the whole event encoded as JSON (``Event.model_dump_json()``, UTF-8) against
  ``APPEVENTS_MAX_EVENT_BYTES``.
* On assignment (``event.event_type = ...``, ``metadata.tenant_id = ...``): the assigned field's rule, and for an
  :class:`Event` the size cap again; a refused assignment leaves the model as it was.
* Reading back (``model_validate_json(..., context={STORED_EVENT_CONTEXT: True})``): every rule except the size
  cap, so an event published under a larger cap stays readable.

* At publish: ``data`` changed in place since (``event.data["k"] = ...``) is validated again (publishing encodes it
  and compares with the JSON validated last); data that is no longer JSON (a datetime, a tuple, NaN, an integer
  past int64 …) is refused there (``publish`` returns False, counted as ``invalid_data``, logged once naming the
  field), never sent as pydantic would coerce it. A replacement encoding to exactly the JSON validated before (a
  tuple for an equal list) is published as that JSON.

Not validated: assignments to the fields of an event's ``metadata`` against the event's size cap (the metadata does
not know its event), and enrichment, which writes metadata fields into ``__dict__`` directly (values from typed
sources, on the caller's path).

How construction stays cheap (``Event(...)`` is on every publisher's path): :func:`_built_fast` validates with
:class:`_EventShape`, the same fields and rules checked by pydantic-core alone (no Python validator), computes the
size cap from the parts of the encoded event and keeps the data's JSON for publishing; what it refuses goes
through :class:`Event`'s own validation, which raises as always. ``model_validate`` and ``model_validate_json``
are pydantic's, unchanged.
"""

from __future__ import annotations

import re
import uuid
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Self, TypeAlias

import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import TypeAliasType

from appevents import _runtime

__all__ = [
    "EVENT_TYPE_PATTERN",
    "MAX_EVENT_TYPE_LENGTH",
    "STORED_EVENT_CONTEXT",
    "ApplicationEventNames",
    "Event",
    "EventMetadata",
    "EventTypes",
    "WorkflowStates",
]

#: ``domain.action`` shape: lowercase words joined by dots (``order.received``, ``data_quality.alert``).
#: Match it against the whole string (``re.fullmatch``): with ``re.match``, ``$`` also accepts a trailing newline.
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
MAX_EVENT_TYPE_LENGTH = 255
#: Validation context key marking an event read back from a log record or a store (the size cap is not re-applied).
STORED_EVENT_CONTEXT = "appevents_stored_event"
_EVENT_TYPE_RE = re.compile(EVENT_TYPE_PATTERN)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Integers an event's data may hold: what every JSON consumer that reads numbers into 64-bit integers can read.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_JSON_TYPES = {list: "list", dict: "dict", str: "str", bool: "bool", int: "int", float: "float", type(None): "NoneType"}
_JSON_KINDS = frozenset(_JSON_TYPES.values())


def _json_kind(value: Any) -> str:
    kind = _JSON_TYPES.get(type(value))
    if kind is not None:
        return kind
    for base, name in (
        (bool, "bool"),
        (int, "int"),
        (float, "float"),
        (str, "str"),
        (list, "list"),
        (dict, "dict"),
    ):  # subclasses
        if isinstance(value, base):
            return name
    return type(value).__name__


#: A JSON value as an event's data holds it: pydantic's ``JsonValue`` with integers bounded to int64, and validated
#: the same way from Python and from JSON text (``JsonValue`` takes JSON text as it comes: ``NaN`` passes there),
#: so ``Event(...)``, ``model_validate_json`` and the OTLP bridge refuse the same values, naming the field.
if TYPE_CHECKING:  # what the type checkers see (as pydantic does for JsonValue)
    EventJsonValue: TypeAlias = "list[EventJsonValue] | dict[str, EventJsonValue] | str | bool | int | float | None"
else:
    EventJsonValue = TypeAliasType(
        "EventJsonValue",
        Annotated[
            Annotated[list["EventJsonValue"], Tag("list")]
            | Annotated[dict[str, "EventJsonValue"], Tag("dict")]
            | Annotated[str, Tag("str")]
            | Annotated[bool, Tag("bool")]
            | Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX), Tag("int")]
            | Annotated[float, Tag("float")]
            | Annotated[None, Tag("NoneType")],
            Discriminator(
                _json_kind,
                custom_error_type="invalid-json-value",
                custom_error_message="input was not a valid JSON value",
            ),
        ],
    )


#: ``Event.data``'s own validator, for what is checked outside ``Event(...)``: the fast path of construction and, at
#: publish, data changed in place since (the same type and rules as the field; errors are located inside ``data``).
DATA_ADAPTER: TypeAdapter[dict[str, Any]] = TypeAdapter(
    dict[str, EventJsonValue], config=ConfigDict(allow_inf_nan=False, hide_input_in_errors=True)
)
#: Where an event built by ``Event(...)`` keeps the JSON of its ``data`` as validated (a key of the instance's
#: ``__dict__`` that is not a field: pydantic's dumps, repr, iteration and ``==`` leave it out). Publishing encodes
#: ``data`` again and compares: the same bytes need no second validation (see :func:`checked_data_json`).
DATA_JSON_KEY = "_appevents_data_json"
_to_json = pydantic_core.to_json


def field_path(loc: tuple[int | str, ...]) -> str:
    """A ValidationError location as a path a reader knows: ``data.x.y[1]`` for
    ``("data", "x", "dict", "y", "list", 1, "float")`` — inside ``data`` every value's location is followed by the
    JSON kind it was tried as, which is left out."""
    parts = list(loc)
    if parts[:1] == ["data"]:
        kept: list[int | str] = ["data"]
        for index, part in enumerate(parts[1:]):
            if index % 2 == 1 and part in _JSON_KINDS:
                continue  # the kind after each value's key or index
            kept.append(part)
        parts = kept
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


class ApplicationEventNames(StrEnum):
    """Lifecycle event names (``Event.event_name``); the Segment exporter sends only these."""

    WORKFLOW_START = "workflow_start"
    WORKFLOW_END = "workflow_end"
    ACTIVITY_START = "activity_start"
    ACTIVITY_END = "activity_end"
    WORKER_START = "worker_start"


class WorkflowStates(StrEnum):
    """Execution state of the workflow an event belongs to (``EventMetadata.workflow_state``)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    TIMED_OUT = "timed_out"
    CONTINUED_AS_NEW = "continued_as_new"
    UNKNOWN = "unknown"


class EventTypes(StrEnum):
    """Event types appevents itself publishes (callers use their own ``domain.action`` types)."""

    APPLICATION_EVENT = "application_events"
    WORKFLOW_LIFECYCLE = "workflow.lifecycle"
    ACTIVITY_LIFECYCLE = "activity.lifecycle"
    WORKER_LIFECYCLE = "worker.lifecycle"


class EventMetadata(BaseModel):
    """Context attached to an event. Every field is optional: enrichment fills the gaps, never overwrites.

    Fields are validated at construction and on assignment. Enrichment writes ``__dict__`` directly on purpose.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    application_name: str | None = None
    #: Unix time in seconds, as the application-sdk defines it.
    created_timestamp: int | None = None
    topic_name: str | None = None
    workflow_type: str | None = None
    workflow_id: str | None = None
    workflow_run_id: str | None = None
    workflow_state: str | None = None
    activity_type: str | None = None
    activity_id: str | None = None
    attempt: int | None = None
    tenant_id: str | None = None
    #: W3C trace id (32 lowercase hex) of the span current when the event was published.
    trace_id: str | None = None
    #: W3C span id (16 lowercase hex).
    span_id: str | None = None
    sdk_version: str | None = None


_set_slot = object.__setattr__
_NO_METADATA: dict[str, Any] = dict.fromkeys(EventMetadata.model_fields)


def _empty_metadata() -> EventMetadata:
    """``EventMetadata()``, built as pydantic builds it (the same four slots) without validating fourteen Nones:
    ~0.3 µs instead of ~1.3 µs, on every event's construction."""
    metadata = object.__new__(EventMetadata)
    _set_slot(metadata, "__dict__", _NO_METADATA.copy())
    _set_slot(metadata, "__pydantic_fields_set__", set())
    _set_slot(metadata, "__pydantic_extra__", None)
    _set_slot(metadata, "__pydantic_private__", None)
    return metadata


class Event(BaseModel):
    """One application event.

    ``event_type`` is a ``domain.action`` name; ``data`` is a JSON object (string keys, finite numbers, no bytes,
    no arbitrary objects, no cycles). The whole event encoded as JSON is capped by ``APPEVENTS_MAX_EVENT_BYTES``.
    Checked at construction and on assignment (a refused assignment changes nothing); events read back with
    :data:`STORED_EVENT_CONTEXT` skip the size cap.
    ``Event.model_validate_json(event.model_dump_json())`` round-trips exactly.
    """

    # hide_input_in_errors: a ValidationError names the field and the rule, never the value (data may hold secrets).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True, hide_input_in_errors=True)

    event_type: Annotated[str, Field(max_length=MAX_EVENT_TYPE_LENGTH)]
    event_name: str | None = None
    data: dict[str, EventJsonValue] = Field(default_factory=dict)
    metadata: EventMetadata = Field(default_factory=_empty_metadata)
    #: Generated when absent; inside a Temporal workflow from ``workflow.uuid4()`` (deterministic).
    event_id: str = Field(default_factory=_runtime.new_event_id)

    if not TYPE_CHECKING:  # type checkers keep the signature pydantic gives the model

        def __init__(self, /, **values: Any) -> None:
            values.pop(DATA_JSON_KEY, None)  # Event(**vars(other_event)): not a field, never an input
            # Only Event itself: a subclass may add fields and validators the fast path knows nothing of.
            if type(self) is not Event or not _built_fast(self, values):
                super().__init__(**values)

        # Marks this __init__ as pydantic's own: model_validate() and model_validate_json() validate as before,
        # without calling it (pydantic calls a model's custom __init__ from validation).
        __init__.__pydantic_base_init__ = True

    @field_validator("event_type")
    @classmethod
    def _event_type_shape(cls, value: str) -> str:
        if not _EVENT_TYPE_RE.fullmatch(value):
            raise ValueError(
                f"event_type {value!r} must look like 'domain.action': lowercase letters, digits and '_', "
                "words joined by '.', starting with a letter (e.g. 'order.received')"
            )
        return value

    @field_validator("event_id")
    @classmethod
    def _event_id_is_uuid(cls, value: str) -> str:
        if _CANONICAL_UUID.fullmatch(value):  # already what str(UUID(value)) gives: ~0.3 µs instead of ~2 µs
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"event_id {value!r} must be a UUID string") from None

    @model_validator(mode="after")
    def _size_capped(self, info: ValidationInfo) -> Self:
        if info.context is not None and info.context.get(STORED_EVENT_CONTEXT):
            return self  # checked when it was built; a stored event is read back whatever the cap is now
        # One serialization, as publishing encodes it (_event_store.py uses the same serializer, default arguments).
        size = len(self.__pydantic_serializer__.to_json(self))
        limit = _runtime.max_event_bytes()
        if size > limit:
            field, field_size = self._largest_field()
            raise ValueError(
                f"the event encodes to {size} bytes, over the limit of {limit} bytes "
                f"(largest field: {field}, {field_size} bytes); raise APPEVENTS_MAX_EVENT_BYTES or publish a "
                "reference to the payload instead"
            )
        return self

    def _largest_field(self) -> tuple[str, int]:
        """The field (``metadata.<name>`` within the metadata) contributing most to the encoded size."""
        encoded = self.model_dump(mode="json")
        parts = {name: value for name, value in encoded.items() if name != "metadata"}
        parts.update({f"metadata.{name}": value for name, value in encoded["metadata"].items()})
        sizes = {name: len(pydantic_core.to_json(value)) for name, value in parts.items()}
        largest = max(sizes, key=sizes.__getitem__)
        return largest, sizes[largest]

    def __setattr__(self, name: str, value: Any) -> None:
        # pydantic applies an assignment before running model validators and keeps it when one fails
        # (pydantic#7105): put the previous state back so a refused assignment changes nothing.
        previous = self.__dict__.copy()
        was_set = name in self.__pydantic_fields_set__
        try:
            super().__setattr__(name, value)
        except ValidationError:
            self.__dict__.clear()
            self.__dict__.update(previous)
            if not was_set:
                self.__pydantic_fields_set__.discard(name)
            raise


#: ``{"event_type":"","event_name":,"data":,"metadata":,"event_id":""}`` and a 36-character id.
_EVENT_JSON_FRAME = len(b'{"event_type":"","event_name":,"data":,"metadata":,"event_id":""}') + 36
_EMPTY_METADATA_JSON = len(EventMetadata.__pydantic_serializer__.to_json(_empty_metadata()))
_metadata_json = EventMetadata.__pydantic_serializer__.to_json


#: The shape's ``event_id`` when none was given (a private object: a caller's equal string is another object, and
#: is validated as an id).
_NO_ID = "".join(("<no ", "event id>"))


class _EventShape(BaseModel):
    """:class:`Event`'s fields with the rules pydantic-core checks on its own (the event type's shape as a
    ``pattern``, in Rust) and none of the Python validators: what ``Event(...)`` validates first (see
    :func:`_built_fast`). The same types, defaults and configuration as :class:`Event`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)

    event_type: Annotated[str, Field(max_length=MAX_EVENT_TYPE_LENGTH, pattern=EVENT_TYPE_PATTERN)]
    event_name: str | None = None
    data: dict[str, EventJsonValue] = Field(default_factory=dict)
    metadata: EventMetadata = Field(default_factory=_empty_metadata)
    # No default factory here: the id is drawn once the event is known to be built (inside a workflow from
    # workflow.uuid4(), whose draws must not change with how an event was built).
    event_id: Annotated[str, AfterValidator(Event._event_id_is_uuid)] = _NO_ID


_validate_shape = _EventShape.__pydantic_validator__.validate_python


def _valid_data_json(data: dict[str, Any]) -> bytes:
    """The JSON of ``data``, already validated: ``pydantic_core.to_json``, or the field's own serializer for what
    only that one writes (a key holding a lone surrogate, written as U+FFFD as ``model_dump_json`` writes it)."""
    try:
        return _to_json(data)
    except ValueError:
        return DATA_ADAPTER.dump_json(data)


def _built_fast(event: Event, values: dict[str, Any]) -> bool:
    """Build ``event`` from ``values`` as pydantic would: True when done, False to leave it to pydantic.

    :class:`_EventShape`'s validator (pydantic-core, the same field types and rules) fills the instance; the size
    cap is computed from the parts of the encoded event (the data encoded once, kept for publishing) instead of
    encoding the whole event: ~3.5 µs where :class:`Event`'s own validation, with its Python validators, takes
    ~8.5 µs. A value it refuses, or an event over the cap, goes to pydantic, which raises the ``ValidationError``
    it always raised (naming the field, with :class:`Event`'s messages). It accepts only what pydantic accepts and
    builds the same event: ``tests/core/test_event_construction.py`` checks both against each other.
    """
    try:
        _validate_shape(values, self_instance=event)
        fields = event.__dict__
        data_json = _valid_data_json(fields["data"])
        name = fields["event_name"]
        size = _EVENT_JSON_FRAME + len(fields["event_type"]) + len(data_json)
        size += 4 if name is None else len(_to_json(name))
        size += _EMPTY_METADATA_JSON if "metadata" not in values else len(_metadata_json(fields["metadata"]))
    except ValueError:  # ValidationError, or what does not encode (a lone surrogate, data nested too deep)
        return False
    if size > _runtime.max_event_bytes():
        return False
    if fields["event_id"] is _NO_ID:
        fields["event_id"] = _runtime.new_event_id()
    fields[DATA_JSON_KEY] = data_json
    return True


def checked_data_json(event: Event) -> bytes:
    """The JSON of ``event.data`` as it is now, for publishing.

    The bytes kept from the last validation (at construction, or at an earlier publish) when ``data`` still encodes
    to them; else ``data`` was changed in place (``event.data["k"] = ...``) and is validated again, and its new JSON
    kept. Raises :class:`pydantic.ValidationError` (located inside ``data``) for data that is no longer JSON. What
    is published is always JSON that passed validation: a replacement encoding to exactly the bytes validated
    before (a tuple for an equal list) is published as those bytes.
    """
    fields = event.__dict__
    data = fields["data"]
    try:
        encoded: bytes | None = _to_json(data)
    except ValueError:  # not serialisable as it is: the validator below says where, if it is not JSON
        encoded = None
    if encoded is not None and encoded == fields.get(DATA_JSON_KEY):
        return encoded
    DATA_ADAPTER.validate_python(data)
    if encoded is None:
        encoded = DATA_ADAPTER.dump_json(data)
    fields[DATA_JSON_KEY] = encoded
    return encoded


def keep_data(event: Event, data: dict[str, Any]) -> bytes:
    """Put ``data`` (JSON, e.g. the redacted copy of ``event.data``) in ``event`` as its data, with its JSON kept;
    returns that JSON. Written to ``__dict__`` like enrichment: no assignment validation on the caller's path."""
    encoded = _valid_data_json(data)
    fields = event.__dict__
    fields["data"] = data
    fields[DATA_JSON_KEY] = encoded
    return encoded


def event_json(event: Event, data_json: bytes) -> bytes:
    """``event.model_dump_json()`` as bytes, with ``data_json`` (from :func:`checked_data_json`) as the encoded
    ``data``: the other fields are encoded here (the metadata by its own serializer), ``data`` not again."""
    fields = event.__dict__
    name = fields["event_name"]
    return b"".join(
        (
            b'{"event_type":',
            _to_json(fields["event_type"]),
            b',"event_name":',
            b"null" if name is None else _to_json(name),
            b',"data":',
            data_json,
            b',"metadata":',
            _metadata_json(fields["metadata"]),
            b',"event_id":',
            _to_json(fields["event_id"]),
            b"}",
        )
    )
