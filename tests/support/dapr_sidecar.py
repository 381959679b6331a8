"""A protocol-level stand-in for the Dapr sidecar (daprd), for tests and benchmarks.

``daprd`` is in no registry on these machines, so this speaks its two faces on loopback:

* gRPC ``dapr.proto.runtime.v1.Dapr`` — ``InvokeBinding``, ``PublishEvent``, ``BulkPublishEvent`` (and
  ``BulkPublishEventAlpha1``), ``GetMetadata`` listing the registered components by name and type;
* HTTP ``GET /v1.0/healthz/outbound`` — what ``DaprClient()`` polls in its constructor — plus ``GET /stats``
  (JSON counters, for a benchmark running the sidecar in another process).

It behaves like daprd where the exporter can tell: an unknown binding answers ``INTERNAL`` "error invoking output
binding X: couldn't find output binding X"; an unknown pub/sub ``INVALID_ARGUMENT`` "pubsub X is not found"; a
configured API token is checked against the ``dapr-api-token`` gRPC header (``UNAUTHENTICATED`` on mismatch).
``bindings.http`` components forward ``create``/``post`` to their ``url`` as an HTTP POST whose headers are the
binding metadata keys that start with a capital letter (Dapr's rule) — so a test sees the very header the real
endpoint would get; a 4xx/5xx answer becomes ``INTERNAL`` "... received status code N". Other binding types
accept and record.

Faults: :meth:`DaprSidecar.fail_next` (the next N calls fail with a code), :meth:`DaprSidecar.fail_when` (calls
whose data contains a marker fail, every time); for bulk publish, :meth:`DaprSidecar.refuse_entries_when` and
:meth:`DaprSidecar.refuse_next_entries` make single entries fail with an error text, as daprd reports a broker's
refusal (in the response's ``failedEntries``, the call itself succeeds). ``max_message_bytes`` caps a request like
daprd's gRPC server does (``RESOURCE_EXHAUSTED`` beyond it). The HTTP receiver answers 401 to revoked
``Authorization`` values (:attr:`HttpReceiver.revoked`), and takes :attr:`HttpReceiver.delay_s` to answer (a
slow endpoint). :meth:`stop`/:meth:`start` keep the same ports.

Run standalone: ``python tests/support/dapr_sidecar.py --component eventstore=bindings.noop`` prints
``READY <grpc_port> <http_port>`` and serves until killed; ``--grpc-port``/``--http-port`` choose the ports (a
test that kills the process starts it again on the same address).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from dapr.proto.runtime.v1 import (
    binding_pb2,
    dapr_pb2_grpc,
    metadata_pb2,
    pubsub_pb2,
)
from google.protobuf import empty_pb2

try:
    from support.http_stub import HttpStub, StubReply, StubRequest
except ModuleNotFoundError:  # run as a script (see above): this folder is on sys.path, its parent is not
    from http_stub import HttpStub, StubReply, StubRequest  # type: ignore[no-redef]

__all__ = ["BindingCall", "DaprSidecar", "HttpReceiver", "PublishedEvent", "ReceivedRequest", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class BindingCall:
    name: str
    operation: str
    data: bytes
    metadata: dict[str, str]
    grpc_metadata: dict[str, str]


@dataclass(frozen=True)
class PublishedEvent:
    pubsub: str
    topic: str
    entry_id: str
    data: bytes
    content_type: str
    metadata: dict[str, str]
    #: The CloudEvent daprd would wrap ``data`` in (``id`` from ``cloudevent.id`` metadata when given).
    cloudevent: dict[str, Any]
    grpc_metadata: dict[str, str]


@dataclass
class _Fault:
    code: grpc.StatusCode
    message: str
    remaining: int | None = None  # None: every time
    marker: bytes | None = None


@dataclass
class _EntryFault:
    error: str
    remaining: int | None = None  # None: every time
    marker: bytes | None = None


@dataclass
class _Counters:
    binding_calls: int = 0
    binding_events: int = 0
    published: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    #: What the receiver answered.
    status: int = 200


class HttpReceiver(HttpStub[ReceivedRequest]):
    """The endpoint behind a ``bindings.http`` component, serving from construction: records every request; answers
    ``status``, or 401 to a request whose ``Authorization`` header is in ``revoked`` (a token the identity provider
    revoked), after ``delay_s`` (a slow endpoint; the request is recorded after the delay, just before the answer)."""

    methods = ("POST",)

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.revoked: set[str] = set()
        self.delay_s = 0.0
        self.url = f"{self.base_url}/events"
        self.start()

    def answer(self, request: StubRequest) -> StubReply:
        if self.delay_s:
            time.sleep(self.delay_s)
        status = 401 if request.headers.get("Authorization") in self.revoked else self.status
        self.record(ReceivedRequest(request.path, request.headers, request.body, status))
        return StubReply.json(status, {})

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request, in arrival order."""
        return self.records

    def accepted(self) -> list[ReceivedRequest]:
        """The requests answered with a 2xx status: what the endpoint took."""
        return [r for r in self.records if 200 <= r.status < 300]

    def bodies(self) -> list[bytes]:
        """Bodies of the accepted requests."""
        return [r.body for r in self.accepted()]


class _DaprServicer(dapr_pb2_grpc.DaprServicer):  # type: ignore[misc]
    def __init__(self, sidecar: DaprSidecar) -> None:
        self._sidecar = sidecar

    def _check(self, request_data: bytes, context: grpc.ServicerContext) -> dict[str, str]:
        sidecar = self._sidecar
        grpc_metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        if sidecar.api_token is not None and grpc_metadata.get("dapr-api-token") != sidecar.api_token:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "authentication error: api token mismatch")
        fault = sidecar._take_fault(request_data)
        if fault is not None:
            with sidecar._lock:
                sidecar.counters.rejected += 1
            context.abort(fault.code, fault.message)
        return grpc_metadata

    def InvokeBinding(
        self, request: binding_pb2.InvokeBindingRequest, context: grpc.ServicerContext
    ) -> binding_pb2.InvokeBindingResponse:
        sidecar = self._sidecar
        grpc_metadata = self._check(request.data, context)
        component = sidecar.components.get(request.name)
        if component is None or not component[0].startswith("bindings."):
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"error invoking output binding {request.name}: couldn't find output binding {request.name}",
            )
        assert component is not None
        metadata = dict(request.metadata)
        component_type, url = component
        if component_type == "bindings.http" and request.operation in ("create", "post"):
            headers = {k: v for k, v in metadata.items() if k[:1].isupper()}
            http_request = urllib.request.Request(url or "", data=request.data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(http_request, timeout=10) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                exc.close()
                context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"error invoking output binding {request.name}: received status code {exc.code}",
                )
            except OSError as exc:
                context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"error invoking output binding {request.name}: Post {url}: {type(exc).__name__}",
                )
        call = BindingCall(request.name, request.operation, request.data, metadata, grpc_metadata)
        with sidecar._lock:
            sidecar.counters.binding_calls += 1
            sidecar.counters.binding_events += _event_count(request.data)
            if sidecar.record:
                sidecar.binding_calls.append(call)
        return binding_pb2.InvokeBindingResponse()

    def _pubsub_known(self, name: str, context: grpc.ServicerContext) -> None:
        component = self._sidecar.components.get(name)
        if component is None or not component[0].startswith("pubsub."):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"pubsub {name} is not found")

    def PublishEvent(self, request: pubsub_pb2.PublishEventRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        grpc_metadata = self._check(request.data, context)
        self._pubsub_known(request.pubsub_name, context)
        self._sidecar._record_published(
            request.pubsub_name,
            request.topic,
            "",
            request.data,
            request.data_content_type,
            dict(request.metadata),
            grpc_metadata,
        )
        return empty_pb2.Empty()

    def BulkPublishEvent(
        self, request: pubsub_pb2.BulkPublishRequest, context: grpc.ServicerContext
    ) -> pubsub_pb2.BulkPublishResponse:
        grpc_metadata = self._check(b"".join(e.event for e in request.entries), context)
        self._pubsub_known(request.pubsub_name, context)
        seen: set[str] = set()
        for entry in request.entries:
            if entry.entry_id in seen:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate entry id {entry.entry_id}")
            seen.add(entry.entry_id)
        failed: list[pubsub_pb2.BulkPublishResponseFailedEntry] = []
        for entry in request.entries:
            error = self._sidecar._take_entry_fault(entry.event)
            if error is not None:
                failed.append(pubsub_pb2.BulkPublishResponseFailedEntry(entry_id=entry.entry_id, error=error))
                continue
            metadata = {**dict(request.metadata), **dict(entry.metadata)}
            self._sidecar._record_published(
                request.pubsub_name,
                request.topic,
                entry.entry_id,
                entry.event,
                entry.content_type,
                metadata,
                grpc_metadata,
            )
        return pubsub_pb2.BulkPublishResponse(failedEntries=failed)

    def BulkPublishEventAlpha1(
        self, request: pubsub_pb2.BulkPublishRequest, context: grpc.ServicerContext
    ) -> pubsub_pb2.BulkPublishResponse:
        return self.BulkPublishEvent(request, context)

    def GetMetadata(
        self, request: metadata_pb2.GetMetadataRequest, context: grpc.ServicerContext
    ) -> metadata_pb2.GetMetadataResponse:
        with self._sidecar._lock:
            components = list(self._sidecar.components.items())
            self._sidecar.metadata_calls += 1
        return metadata_pb2.GetMetadataResponse(
            id=self._sidecar.app_id,
            registered_components=[
                metadata_pb2.RegisteredComponents(name=name, type=ctype, version="v1")
                for name, (ctype, _url) in components
            ],
        )


def _event_count(data: bytes) -> int:
    # A JSON array carries several events (batch mode); anything else is one.
    if data[:1] == b"[":
        try:
            return len(json.loads(data))
        except ValueError:
            return 1
    return 1


class DaprSidecar:
    """The stand-in sidecar. Ports are fixed at construction, so :meth:`stop`/:meth:`start` keep them."""

    def __init__(
        self,
        *,
        api_token: str | None = None,
        record: bool = True,
        max_workers: int = 64,
        max_message_bytes: int | None = None,
        grpc_port: int | None = None,
        http_port: int | None = None,
    ) -> None:
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.api_token = api_token
        self.app_id = "appevents-test"
        self.record = record
        self.components: dict[str, tuple[str, str | None]] = {}
        self.binding_calls: list[BindingCall] = []
        self.published: list[PublishedEvent] = []
        self.counters = _Counters()
        #: Counting mode with ``--latency``: publish-to-sidecar latencies of stamped events (see _SENT_NS).
        self.latencies_ns: list[int] | None = None
        self.metadata_calls = 0
        self._max_workers = max_workers
        self._max_message_bytes = max_message_bytes
        self._faults: list[_Fault] = []
        self._entry_faults: list[_EntryFault] = []
        #: Bulk publish entries refused (reported in ``failedEntries``).
        self.refused_entries = 0
        self._lock = threading.Lock()
        self._grpc: grpc.Server | None = None
        self._http: _SidecarHttp | None = None

    # -- addresses (what the app's DAPR_* variables point at) ----------------------------------------------------
    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = {
            "DAPR_GRPC_ENDPOINT": self.grpc_endpoint,
            "DAPR_HTTP_ENDPOINT": self.http_endpoint,
            "DAPR_HEALTH_TIMEOUT": "5",
        }
        if self.api_token is not None:
            env["DAPR_API_TOKEN"] = self.api_token
        return env

    # -- components ----------------------------------------------------------------------------------------------
    def register(self, name: str, component_type: str, url: str | None = None) -> None:
        with self._lock:
            self.components[name] = (component_type, url)

    def unregister(self, name: str) -> None:
        with self._lock:
            self.components.pop(name, None)

    # -- faults --------------------------------------------------------------------------------------------------
    def fail_next(self, count: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        with self._lock:
            self._faults.append(_Fault(code, f"injected {code.name}", remaining=count))

    def fail_when(self, marker: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:
        with self._lock:
            self._faults.append(_Fault(code, f"injected {code.name} for {marker}", marker=marker.encode()))

    def refuse_entries_when(self, marker: str, error: str) -> None:
        """Bulk publish entries whose event contains ``marker`` fail with ``error``, every time."""
        with self._lock:
            self._entry_faults.append(_EntryFault(error, marker=marker.encode()))

    def refuse_next_entries(self, count: int, error: str) -> None:
        """The next ``count`` bulk publish entries fail with ``error``."""
        with self._lock:
            self._entry_faults.append(_EntryFault(error, remaining=count))

    def _take_entry_fault(self, data: bytes) -> str | None:
        with self._lock:
            for fault in self._entry_faults:
                if (fault.marker is not None and fault.marker in data) or (fault.marker is None and fault.remaining):
                    if fault.remaining:
                        fault.remaining -= 1
                    self.refused_entries += 1
                    return fault.error
        return None

    def _take_fault(self, data: bytes) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.marker is not None:
                    if fault.marker in data:
                        return fault
                elif fault.remaining:
                    fault.remaining -= 1
                    return fault
        return None

    def _record_published(
        self,
        pubsub: str,
        topic: str,
        entry_id: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str],
        grpc_metadata: dict[str, str],
    ) -> None:
        cloudevent = {
            "specversion": "1.0",
            "id": metadata.get("cloudevent.id") or str(uuid.uuid4()),
            "source": self.app_id,
            "type": metadata.get("cloudevent.type") or "com.dapr.event.sent",
            "topic": topic,
            "pubsubname": pubsub,
            "datacontenttype": content_type or "text/plain",
            "data": data.decode(),
        }
        event = PublishedEvent(pubsub, topic, entry_id, data, content_type, metadata, cloudevent, grpc_metadata)
        with self._lock:
            self.counters.published += 1
            if self.record:
                self.published.append(event)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> DaprSidecar:
        options = []
        if self._max_message_bytes is not None:
            options.append(("grpc.max_receive_message_length", self._max_message_bytes))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_workers), options=options)
        dapr_pb2_grpc.add_DaprServicer_to_server(_DaprServicer(self), server)
        server.add_insecure_port(self.grpc_endpoint)
        server.start()
        self._grpc = server
        self.start_health_only()
        return self

    def start_health_only(self) -> None:
        """Serve the HTTP face (health, stats) only."""
        self._http = _SidecarHttp(self).start()

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait()
            self._grpc = None
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def running(self) -> bool:
        return self._grpc is not None

    def binding_bodies(self) -> list[bytes]:
        with self._lock:
            return [c.data for c in self.binding_calls]


class _SidecarHttp(HttpStub[None]):
    """The sidecar's HTTP face: ``GET /v1.0/healthz/...`` answers 204, ``GET /stats`` the counters as JSON."""

    methods = ("GET",)

    def __init__(self, sidecar: DaprSidecar) -> None:
        super().__init__(sidecar.http_port)
        self._sidecar = sidecar

    def answer(self, request: StubRequest) -> StubReply:
        if request.path.startswith("/v1.0/healthz"):
            return StubReply(204)
        if request.path == "/stats":
            with self._sidecar._lock:
                return StubReply.json(200, self._sidecar.counters.__dict__)
        if request.path == "/latencies" and self._sidecar.latencies_ns is not None:
            taken, self._sidecar.latencies_ns[:] = list(self._sidecar.latencies_ns), []
            return StubReply.json(200, {"latencies_ns": taken})
        return StubReply(404)


@contextmanager
def running_sidecar(**kwargs: Any) -> Iterator[DaprSidecar]:
    sidecar = DaprSidecar(**kwargs).start()
    try:
        yield sidecar
    finally:
        sidecar.stop()


#: A ``"sent_ns": <time.monotonic_ns() of the publisher>`` field in an event's data (CLOCK_MONOTONIC is one clock
#: for every process of the machine).
_SENT_NS = re.compile(rb'"sent_ns":(\d+)')


class _CountingAioServicer(dapr_pb2_grpc.DaprServicer):  # type: ignore[misc]
    """Benchmark face of the stand-in: asyncio gRPC, counts and acknowledges, records nothing.

    The thread-pool server above spends most of its time in Python's per-request overhead (about 1k calls/s
    on two busy cores); a real daprd is Go and several times faster. This keeps the stand-in out of the way.
    """

    def __init__(self, sidecar: DaprSidecar) -> None:
        self._sidecar = sidecar

    async def InvokeBinding(self, request: Any, context: Any) -> binding_pb2.InvokeBindingResponse:
        if request.name not in self._sidecar.components:
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"error invoking output binding {request.name}: couldn't find output binding {request.name}",
            )
        counters = self._sidecar.counters
        counters.binding_calls += 1
        counters.binding_events += request.data.count(b'"event_type":') or 1
        if self._sidecar.latencies_ns is not None:  # bench/latency.py: events stamped with the publisher's clock
            now = time.monotonic_ns()
            self._sidecar.latencies_ns.extend(now - int(m.group(1)) for m in _SENT_NS.finditer(request.data))
        return binding_pb2.InvokeBindingResponse()

    async def BulkPublishEvent(self, request: Any, context: Any) -> pubsub_pb2.BulkPublishResponse:
        if request.pubsub_name not in self._sidecar.components:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"pubsub {request.pubsub_name} is not found")
        self._sidecar.counters.published += len(request.entries)
        return pubsub_pb2.BulkPublishResponse()

    async def BulkPublishEventAlpha1(self, request: Any, context: Any) -> pubsub_pb2.BulkPublishResponse:
        return await self.BulkPublishEvent(request, context)

    async def GetMetadata(self, request: Any, context: Any) -> metadata_pb2.GetMetadataResponse:
        return metadata_pb2.GetMetadataResponse(
            id=self._sidecar.app_id,
            registered_components=[
                metadata_pb2.RegisteredComponents(name=name, type=ctype, version="v1")
                for name, (ctype, _url) in self._sidecar.components.items()
            ],
        )


async def _serve_counting(sidecar: DaprSidecar) -> None:
    server = grpc.aio.server()
    dapr_pb2_grpc.add_DaprServicer_to_server(_CountingAioServicer(sidecar), server)
    server.add_insecure_port(sidecar.grpc_endpoint)
    await server.start()
    print(f"READY {sidecar.grpc_port} {sidecar.http_port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--component", action="append", default=[], help="name=type[@url]")
    parser.add_argument("--api-token", default=None)
    parser.add_argument("--max-workers", type=int, default=64)
    parser.add_argument("--counting", action="store_true", help="asyncio server that only counts (benchmarks)")
    parser.add_argument("--latency", action="store_true", help="with --counting: record stamped events' latency")
    parser.add_argument("--grpc-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--http-port", type=int, default=None, help="default: a free port")
    args = parser.parse_args()
    sidecar = DaprSidecar(
        api_token=args.api_token,
        record=False,
        max_workers=args.max_workers,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
    )
    for spec in args.component:
        name, _, rest = spec.partition("=")
        ctype, _, url = rest.partition("@")
        sidecar.register(name, ctype, url or None)
    if args.counting:
        if args.latency:
            sidecar.latencies_ns = []
        sidecar.start_health_only()
        asyncio.run(_serve_counting(sidecar))
        return
    sidecar.start()
    print(f"READY {sidecar.grpc_port} {sidecar.http_port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
