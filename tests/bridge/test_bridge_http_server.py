"""The OTLP/HTTP listener as HTTP/1.1 (real bridge processes, raw sockets as clients): chunked bodies (what several
OTel SDKs' HTTP exporters send, gzip or not) are delivered, keep-alive and pipelined requests are answered in
order, and deadlines — not idle timers — hold: a header block or a body trickled in slowly is cut at its deadline,
and 200 slow connections never lock out a client that sends a request."""

from __future__ import annotations

import gzip
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from support.bridge_process import TOKEN, BridgeProcess, delivered, events, post, request_of
from support.dapr_sidecar import HttpReceiver
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


def read_answer(stream: socket.SocketIO | object) -> RawAnswer:
    """One HTTP/1.1 response (``Content-Length`` framed, as the bridge answers) from a buffered socket file."""
    reader = stream
    status_line = reader.readline()  # type: ignore[attr-defined]
    if not status_line:
        raise ConnectionError("the connection closed without an answer")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):  # type: ignore[attr-defined]
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))  # type: ignore[attr-defined]
    return RawAnswer(status, headers, body)


def chunked_request(body: bytes, *, gzipped: bool = False, chunk: int = 1000, token: str = TOKEN) -> bytes:
    """``POST /v1/logs`` with ``Transfer-Encoding: chunked`` and no ``Content-Length``."""
    if gzipped:
        body = gzip.compress(body)
    head = (
        "POST /v1/logs HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/x-protobuf\r\n"
        f"Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n"
        + ("Content-Encoding: gzip\r\n" if gzipped else "")
        + "\r\n"
    ).encode()
    pieces = [b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk]) for i in range(0, len(body), chunk)]
    return head + b"".join(pieces) + b"0\r\n\r\n"


def _bodies(count: int, tag: str) -> list[str]:
    return [e.model_dump_json() for e in events(count, tag=tag)]


@pytest.fixture
def bridge(start_bridge: Callable[..., BridgeProcess]) -> BridgeProcess:
    return start_bridge()


def test_chunked_bodies_plain_and_gzip_are_delivered_on_one_keep_alive_connection(
    bridge: BridgeProcess, receiver: HttpReceiver
) -> None:
    plain, zipped = _bodies(30, "chunked"), _bodies(30, "chunked-gzip")
    with socket.create_connection(("127.0.0.1", bridge.http_port), timeout=20) as sock:
        stream = sock.makefile("rb")
        sock.sendall(chunked_request(request_of(*plain)))
        first = read_answer(stream)
        sock.sendall(chunked_request(request_of(*zipped), gzipped=True, chunk=97))
        second = read_answer(stream)
    assert (first.status, second.status) == (200, 200)
    assert "close" not in first.headers.get("connection", "")  # the connection stayed open for the second
    assert not ExportLogsServiceResponse.FromString(second.body).HasField("partial_success")
    expected = {json.loads(b)["event_id"] for b in plain + zipped}
    assert wait_until(lambda: {e["event_id"] for e in delivered(receiver)} >= expected, 20)


def test_pipelined_requests_are_answered_in_order(bridge: BridgeProcess, receiver: HttpReceiver) -> None:
    batches = [_bodies(5, f"pipelined-{i}") for i in range(3)]
    health = b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n"
    with socket.create_connection(("127.0.0.1", bridge.http_port), timeout=20) as sock:
        stream = sock.makefile("rb")
        # Everything in one write: the bridge reads the second request only after answering the first.
        sock.sendall(
            chunked_request(request_of(*batches[0]))
            + health
            + b"".join(chunked_request(request_of(*batch)) for batch in batches[1:])
        )
        answers = [read_answer(stream) for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert answers[1].body == b"ok\n"
    expected = {json.loads(b)["event_id"] for batch in batches for b in batch}
    assert wait_until(lambda: {e["event_id"] for e in delivered(receiver)} >= expected, 20)


def test_a_chunked_body_over_the_limit_is_refused_413(start_bridge: Callable[..., BridgeProcess]) -> None:
    bridge = start_bridge(APPEVENTS_BRIDGE_MAX_BODY_BYTES=str(32 * 1024))
    large = request_of(*_bodies(200, "large"))
    assert len(large) > 32 * 1024
    with socket.create_connection(("127.0.0.1", bridge.http_port), timeout=20) as sock:
        sock.sendall(chunked_request(large, chunk=4096))
        answer = read_answer(sock.makefile("rb"))
    assert answer.status == 413
    assert "limit" in Status.FromString(answer.body).message
    assert post(bridge.http_url, request_of(*_bodies(2, "after"))).status == 200


class SlowClients:
    """``count`` connections that each send one more byte of a header block every ``interval_s`` (never ending
    it) and, as slowloris does, reopen at that pace whichever the bridge closed; one thread, one selector."""

    def __init__(self, port: int, count: int, interval_s: float, *, reopen: bool = True) -> None:
        self.port, self.count, self.interval_s, self.reopen = port, count, interval_s, reopen
        self.closed_by_bridge = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._opened: dict[socket.socket, float] = {}

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _open(self, selector: selectors.BaseSelector) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        selector.register(sock, selectors.EVENT_READ)
        self._opened[sock] = time.monotonic()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        head = b"POST /v1/logs HTTP/1.1\r\nHost: bridge\r\nX-Slow: " + b"a" * 10_000
        sent: dict[socket.socket, int] = {}
        for _ in range(self.count):
            self._open(selector)
        next_byte = time.monotonic()
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # closed by the bridge: a new one takes its place at the next tick
                    selector.unregister(sock)
                    self._opened.pop(sock)
                    sent.pop(sock, None)
                    sock.close()
                    self.closed_by_bridge += 1
            if time.monotonic() >= next_byte:
                next_byte += self.interval_s
                for _ in range(self.count - len(self._opened) if self.reopen else 0):
                    self._open(selector)
                for sock in list(self._opened):
                    position = sent.get(sock, 0)
                    try:
                        sock.send(head[position : position + 1])
                        sent[sock] = position + 1
                    except OSError:
                        pass  # not connected yet, or closed: the selector reports it
        for sock in self._opened:
            sock.close()
        selector.close()


def test_two_hundred_slow_connections_never_lock_out_a_client_with_a_request(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver
) -> None:
    # Default limits; a short header deadline so that the slow connections are cut and come back during the test.
    bridge = start_bridge(APPEVENTS_BRIDGE_HEADER_TIMEOUT_S="3")
    served: list[int] = []
    with SlowClients(bridge.http_port, 200, interval_s=0.5) as slow:
        time.sleep(1.0)  # all 200 open and trickling
        deadline = time.monotonic() + 8.0
        round_ = 0
        while time.monotonic() < deadline:
            # a generous bound for "served": locked out would mean no answer at all
            served.append(post(bridge.http_url, request_of(*_bodies(3, f"legit-{round_}")), timeout_s=2.0).status)
            round_ += 1
            time.sleep(0.3)
        closed = slow.closed_by_bridge
    assert served and all(status == 200 for status in served), served
    assert closed >= 200  # each slow connection was cut at least once
    assert wait_until(lambda: len(delivered(receiver)) >= 3 * len(served), 20)


def test_at_the_connection_limit_slow_connections_give_way_to_a_client_with_a_request(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver
) -> None:
    # 60 slow connections for 16 places (the old listener closed every new connection at its limit, authenticated
    # ones included): each new connection closes the oldest one that is not inside a request.
    bridge = start_bridge(APPEVENTS_BRIDGE_MAX_CONNECTIONS="16")
    served: list[int] = []
    with SlowClients(bridge.http_port, 60, interval_s=0.5, reopen=False) as slow:
        time.sleep(1.0)
        for round_ in range(10):
            served.append(post(bridge.http_url, request_of(*_bodies(2, f"legit-{round_}")), timeout_s=2.0).status)
            time.sleep(0.2)
        closed = slow.closed_by_bridge
    assert served == [200] * 10
    assert closed >= 60 - 16


def test_a_header_block_trickled_slowly_is_cut_at_the_header_deadline(
    start_bridge: Callable[..., BridgeProcess],
) -> None:
    # One connection, far below the connection limit: only the deadline can close it (a per-read idle timer of
    # any length would not, at one byte every 0.2 s).
    bridge = start_bridge(APPEVENTS_BRIDGE_HEADER_TIMEOUT_S="1.5")
    with SlowClients(bridge.http_port, 1, interval_s=0.2) as slow:
        assert wait_until(lambda: slow.closed_by_bridge > 0, 30), "a trickling header block kept its connection"
    assert post(bridge.http_url, request_of(*_bodies(1, "after"))).status == 200


def test_a_body_trickled_slowly_is_cut_at_the_body_deadline(start_bridge: Callable[..., BridgeProcess]) -> None:
    bridge = start_bridge(APPEVENTS_BRIDGE_BODY_TIMEOUT_S="1.5")
    body = request_of(*_bodies(1, "slow-body"))
    head = (
        "POST /v1/logs HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/x-protobuf\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", bridge.http_port), timeout=20) as sock:
        sock.sendall(head)
        closed = False
        for byte in body:  # one byte every 0.2 s: each read is quick, the whole body is not
            try:
                sock.sendall(bytes([byte]))
                sock.settimeout(0.2)
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    assert closed, "the bridge waited for the whole trickled body"
    assert post(bridge.http_url, request_of(*_bodies(1, "after"))).status == 200
