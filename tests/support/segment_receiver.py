"""A Segment-compatible HTTP receiver on loopback, for tests.

It checks what Segment's tracking API checks and answers the way it does:

* ``POST /v1/batch`` only (else 404/405);
* ``Authorization: Basic base64("<write key>:")`` with the expected key (else 401); a ``writeKey`` in the body, when
  present, must match too;
* a JSON object body (gzip accepted) with a non-empty ``batch`` list and an ISO-8601 ``sentAt``; each message has a
  known ``type``, ``userId`` or ``anonymousId``, a ``messageId``, an ISO-8601 ``timestamp`` with a timezone, object
  ``properties``/``context`` when present, and for ``track`` a non-empty ``event``; a message is at most 32 KB and the
  request at most 500 KB (else 400 with ``{"code", "message"}``).

It can be scripted to answer given statuses first (``respond_with(503, 503)`` then 200, or ``respond_with(400)``), to
hold requests until released (a destination that hangs), and it records every request and every accepted message.

Usage::

    with SegmentReceiver(write_key="wk") as receiver:
        client = Client("wk", host=receiver.url)
        ...
        assert receiver.wait_for_messages(1)
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from support.http_stub import HttpStub, StubReply, StubRequest

__all__ = ["ReceivedRequest", "SegmentReceiver"]

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MESSAGE_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as it arrived, and what the receiver answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    status: int
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def messages(self) -> list[dict[str, Any]]:
        batch = (self.body or {}).get("batch")
        return list(batch) if isinstance(batch, list) else []


def _is_iso_datetime(value: object, *, require_tz: bool) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None or not require_tz


def message_problems(message: object) -> list[str]:
    """What Segment's API would reject in one batch message (empty list: valid)."""
    if not isinstance(message, dict):
        return ["message is not an object"]
    problems: list[str] = []
    if message.get("type") not in MESSAGE_TYPES:
        problems.append(f"type {message.get('type')!r} is not one of {sorted(MESSAGE_TYPES)}")
    if not any(isinstance(message.get(key), str) and message[key] for key in ("userId", "anonymousId")):
        problems.append("userId or anonymousId is required")
    if not isinstance(message.get("messageId"), str) or not message["messageId"]:
        problems.append("messageId must be a non-empty string")
    if not _is_iso_datetime(message.get("timestamp"), require_tz=True):
        problems.append(f"timestamp {message.get('timestamp')!r} is not ISO-8601 with a timezone")
    if message.get("type") == "track" and (not isinstance(message.get("event"), str) or not message["event"]):
        problems.append("track needs a non-empty event name")
    for key in ("properties", "context", "traits", "integrations"):
        if key in message and not isinstance(message[key], dict):
            problems.append(f"{key} must be an object")
    if len(json.dumps(message).encode()) > MAX_MESSAGE_BYTES:
        problems.append("message is over 32 KB")
    return problems


class SegmentReceiver(HttpStub[ReceivedRequest]):
    """Serve a Segment-like ``/v1/batch`` endpoint on ``127.0.0.1`` at a free port."""

    def __init__(self, write_key: str) -> None:
        super().__init__()
        self.write_key = write_key
        self.url = self.base_url
        self._script: deque[int] = deque()
        self._messages: list[dict[str, Any]] = []
        self._released = threading.Event()
        self._released.set()

    def stop(self) -> None:
        self._released.set()
        super().stop()

    # -- scripting -------------------------------------------------------------------------------------------------
    def respond_with(self, *statuses: int) -> None:
        """Answer the next requests with these statuses (after recording them), then 200 again."""
        with self._lock:
            self._script.extend(statuses)

    def hold(self) -> None:
        """Keep requests waiting (unanswered) until :meth:`release`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    # -- what arrived ----------------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[ReceivedRequest]:
        return self.records

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Messages of the requests answered 200, in arrival order (duplicates kept, so tests can see them)."""
        with self._lock:
            return list(self._messages)

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> bool:
        return self.wait_for(lambda: len(self._messages) >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        return self.wait_for_records(count, timeout)

    # -- HTTP ------------------------------------------------------------------------------------------------------
    def _expected_authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()

    def _judge(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any] | None, list[str]]:
        if path != "/v1/batch":
            return 404, None, [f"unknown path {path}"]
        if method != "POST":
            return 405, None, [f"method {method} not allowed"]
        if headers.get("authorization") != self._expected_authorization():
            return 401, None, ["missing or wrong Basic authorization for the write key"]
        if len(raw) > MAX_BATCH_BYTES:
            return 400, None, ["request body over 500 KB"]
        try:
            if headers.get("content-encoding") == "gzip":
                raw = gzip.decompress(raw)
            body = json.loads(raw)
        except (OSError, ValueError):
            return 400, None, ["body is not JSON"]
        if not isinstance(body, dict):
            return 400, None, ["body is not a JSON object"]
        problems: list[str] = []
        if "writeKey" in body and body["writeKey"] != self.write_key:
            problems.append("writeKey in the body does not match the authorization")
        if not _is_iso_datetime(body.get("sentAt"), require_tz=False):
            problems.append("sentAt is not ISO-8601")
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            problems.append("batch must be a non-empty list")
        else:
            for index, message in enumerate(batch):
                problems.extend(f"batch[{index}]: {problem}" for problem in message_problems(message))
        return (400 if problems else 200), body, problems

    def answer(self, request: StubRequest) -> StubReply:
        headers = {key.lower(): value for key, value in request.headers.items()}
        path = request.path.split("?", 1)[0]
        status, body, problems = self._judge(request.method, path, headers, request.body)
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            status = scripted
        self._released.wait()
        with self._lock:
            self.record(ReceivedRequest(request.method, path, headers, body, status, tuple(problems)))
            if status == 200 and body is not None:
                self._messages.extend(body["batch"])
        if status == 200:
            return StubReply.json(200, {"success": True})
        code = "invalid_request" if status < 500 else "unavailable"
        return StubReply.json(status, {"code": code, "message": "; ".join(problems) or f"scripted status {status}"})
