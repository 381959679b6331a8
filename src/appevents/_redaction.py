"""Redaction: the values of credential-like keys in an event's ``data`` are replaced by ``"[REDACTED]"``.

Applied once, at publish (:meth:`appevents.EventStore.publish`), before the event is encoded: every exporter, the
spool, the OTel log records and the span event see the redacted data. ``APPEVENTS_REDACT_KEYS`` names the keys
(:data:`~appevents._settings.DEFAULT_REDACT_KEYS` by default, empty: off).

:func:`redact` matches keys case-insensitively (``str.lower``) at any depth: in nested objects, and in objects
inside arrays. A matching key's whole value is replaced, whatever it is (a string, an object, an array). Keys are
matched, never values: a secret under an innocent key (``{"note": "password is hunter2"}``) is not found.

What is scanned: ``dict`` (objects) and ``list``/``tuple`` (arrays), subclasses included, which is what
``Event.data`` holds (JSON). Other objects put into ``data`` in place after construction are not looked into.

Cost: an event with nothing to redact is returned as it is (the same object), after one scan that allocates
nothing but a small stack for nested containers. Keys already seen not to match are remembered per key set (at
most 4096 keys of up to 64 characters), so an object whose keys were all seen before is checked with one
``set.issuperset`` instead of a ``str.lower`` per key; the scan still visits every value, to find nested objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final

from appevents._settings import AppEventsSettings

__all__ = ["MAX_DEPTH", "REDACTED", "Redactor", "redact", "redact_keys", "redactor_of"]

#: What a matching key's value becomes.
REDACTED: Final = "[REDACTED]"
#: Deepest nesting :func:`redact` looks into. Deeper data raises ``ValueError``, so the event is refused at publish
#: (counted in ``EventStore.unpublished_count()``) rather than published unscanned. The JSON encoder refuses
#: data nested deeper than about 250 levels anyway; a cycle (only possible by changing ``data`` in place) ends here
#: too, after at most this many levels.
MAX_DEPTH: Final = 512

_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_CONTAINERS: Final = (dict, list, tuple)
#: Marks, on the scan's stack, the end of one container's children (the depth goes back up by one).
_UP: Final = object()
#: Per key set, keys seen not to match (exact strings): checked with one ``set.issuperset`` per object.
_KNOWN_SAFE: dict[frozenset[str], set[object]] = {}
_KNOWN_SAFE_MAX_KEYS: Final = 4096
_KNOWN_SAFE_MAX_KEY_LENGTH: Final = 64
_KNOWN_SAFE_MAX_SETS: Final = 8
_TOO_DEEP: Final = f"event data is nested deeper than {MAX_DEPTH} levels (or is cyclic): not published"


def redact_keys(names: Iterable[str]) -> frozenset[str]:
    """The key set :func:`redact` takes: ``names`` stripped and lower-cased, empty names left out."""
    return frozenset(lowered for name in names if (lowered := name.strip().lower()))


Redactor = Callable[[dict[str, Any]], dict[str, Any]]
_cached_for: tuple[object, object, Redactor | None] = (None, None, None)


def redactor_of(settings: AppEventsSettings) -> Redactor | None:
    """:func:`redact` bound to ``settings.redact_keys`` (None: redaction is off), made once per settings object —
    that is, once per pipeline.

    The last answer is kept with the settings object and the list it was made from: the next call for the same
    settings (every publish to the same pipeline) costs two identity checks. Assigning a new list to
    ``settings.redact_keys`` is seen; changing the list in place is not.
    """
    global _cached_for
    cached = _cached_for
    names = settings.redact_keys
    if cached[0] is settings and cached[1] is names:
        return cached[2]
    keys = redact_keys(names)
    redactor = partial(_redact, keys, _known_safe_for(keys)) if keys else None
    _cached_for = (settings, names, redactor)
    return redactor


def redact(data: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    """``data`` with the value of every key in ``keys`` (lower-cased; compared with ``key.lower()``) replaced by
    :data:`REDACTED`, at any depth.

    Nothing to redact: returns ``data`` itself (no copy). Otherwise a new object: the objects and arrays on the
    way to a redacted value are copied (tuples become lists), everything else is shared — ``data`` and what it
    holds are never changed. Raises ``ValueError`` for data nested deeper than :data:`MAX_DEPTH` (or cyclic).
    """
    if not keys:
        return data
    return _redact(keys, _known_safe_for(keys), data)


def _redact(keys: frozenset[str], safe: set[object], data: dict[str, Any]) -> dict[str, Any]:
    if not data:
        return data
    # The top level inline (most events are one flat object): no stack unless something is nested.
    if not safe.issuperset(data) and _unknown_key_matches(data, keys, safe):
        return _redacted_copy(data, keys)
    nested: list[Any] | None = None
    for value in data.values():
        if type(value) not in _SCALARS and isinstance(value, _CONTAINERS):
            if nested is None:
                nested = [value]
            else:
                nested.append(value)
    if nested is not None and _nested_match(nested, keys, safe):
        return _redacted_copy(data, keys)
    return data


def _known_safe_for(keys: frozenset[str]) -> set[object]:
    safe = _KNOWN_SAFE.get(keys)
    if safe is None:
        if len(_KNOWN_SAFE) >= _KNOWN_SAFE_MAX_SETS:
            _KNOWN_SAFE.clear()
        safe = _KNOWN_SAFE.setdefault(keys, set())
    return safe


def _unknown_key_matches(obj: dict[Any, Any], keys: frozenset[str], safe: set[object]) -> bool:
    """Whether a key of ``obj`` not yet known to be safe matches; remembers those that do not."""
    for key in obj:
        if key not in safe:
            if isinstance(key, str):
                if key.lower() in keys:
                    return True
                if len(key) > _KNOWN_SAFE_MAX_KEY_LENGTH:
                    continue
            if len(safe) < _KNOWN_SAFE_MAX_KEYS:
                safe.add(key)
    return False


def _nested_match(stack: list[Any], keys: frozenset[str], safe: set[object]) -> bool:
    """Whether a key matches in the containers on ``stack`` (children of the top level) or below them.

    Depth-first with an explicit stack: no recursion. :data:`_UP` on the stack marks the end of one container's
    children, so the depth is known without a tuple per container; a cycle reaches :data:`MAX_DEPTH` after a few
    hundred steps.
    """
    scalars = _SCALARS
    containers = _CONTAINERS
    up = _UP
    depth = 1
    while stack:
        node = stack.pop()
        if node is up:
            depth -= 1
            continue
        if isinstance(node, dict):
            if not safe.issuperset(node) and _unknown_key_matches(node, keys, safe):
                return True
            values: Iterable[Any] = node.values()
        else:
            values = node
        first = True
        for value in values:
            if type(value) not in scalars and isinstance(value, containers):
                if first:  # this node's children go on the stack above a marker for the way back up
                    first = False
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise ValueError(_TOO_DEEP)
                    stack.append(up)
                stack.append(value)
    return False


class _Frame:
    """One object or array met by :func:`_redacted_copy`: its copy once something under it changed."""

    __slots__ = ("copy", "depth", "key", "original", "parent")

    def __init__(self, original: Any, parent: _Frame | None, key: Any, depth: int) -> None:
        self.original = original
        self.parent = parent
        self.key = key
        self.depth = depth
        self.copy: Any = None


def _writable(frame: _Frame) -> Any:
    """``frame``'s copy, made (with those of its ancestors, each put in place in its parent's copy) if needed."""
    if frame.copy is not None:
        return frame.copy
    path: list[_Frame] = []
    current: _Frame | None = frame
    while current is not None and current.copy is None:
        path.append(current)
        current = current.parent
    for step in reversed(path):  # outermost first: its parent already has a copy (or it is the root)
        original = step.original
        step.copy = dict(original) if isinstance(original, dict) else list(original)
        if step.parent is not None:
            step.parent.copy[step.key] = step.copy
    return frame.copy


def _redacted_copy(data: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    """The slow path, once a match is known: copy-on-write along the way to each match. No recursion."""
    root = _Frame(data, None, None, 0)
    stack = [root]
    while stack:
        frame = stack.pop()
        node = frame.original
        depth = frame.depth + 1
        is_object = isinstance(node, dict)
        children: Iterable[tuple[Any, Any]] = node.items() if is_object else enumerate(node)
        for key, value in children:
            if is_object and isinstance(key, str) and key.lower() in keys:
                _writable(frame)[key] = REDACTED
            elif isinstance(value, _CONTAINERS):
                if depth > MAX_DEPTH:
                    raise ValueError(_TOO_DEEP)
                stack.append(_Frame(value, frame, key, depth))
    result: dict[str, Any] = root.copy if root.copy is not None else data
    return result
