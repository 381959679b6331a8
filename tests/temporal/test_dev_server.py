"""The demo's dev server is ready when a client can connect, not when its port opens.

The real frontend listens a moment before it is healthy and answers ``GetSystemInfo`` (the call ``Client.connect``
makes) with UNAVAILABLE "Frontend is not healthy yet" meanwhile; temporalio does not retry it, and the demo's Temporal
part failed that way in CI. These tests run ``DevServer`` on a stand-in binary with that behaviour stretched to a
second, so the window cannot be missed.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from temporalio.client import Client

from appevents._demo.devserver import DevServer
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

_FRONTEND = textwrap.dedent(
    """\
    #!{python}
    # Answers every call UNAVAILABLE for UNHEALTHY_S after listening, then GetSystemInfo with an empty response.
    import sys, time
    from concurrent import futures
    import grpc

    UNHEALTHY_S = float(sys.argv[sys.argv.index("--unhealthy-s") + 1]) if "--unhealthy-s" in sys.argv else {unhealthy}
    port = sys.argv[sys.argv.index("--port") + 1]
    started = time.monotonic()

    def answer(request, context):
        if time.monotonic() - started < UNHEALTHY_S:
            context.abort(grpc.StatusCode.UNAVAILABLE, "Frontend is not healthy yet")
        return b""  # an empty GetSystemInfoResponse

    class Frontend(grpc.GenericRpcHandler):
        def service(self, details):
            return grpc.unary_unary_rpc_method_handler(answer)

    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[Frontend()])
    server.add_insecure_port("127.0.0.1:" + port)
    server.start()
    server.wait_for_termination()
    """
)


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _stand_in(tmp_path: Path, unhealthy_s: float) -> str:
    binary = tmp_path / "temporal"
    binary.write_text(_FRONTEND.format(python=sys.executable, unhealthy=unhealthy_s))
    binary.chmod(0o755)
    return str(binary)


async def test_start_returns_once_a_client_can_connect_not_when_the_port_opens(tmp_path: Path) -> None:
    with DevServer(binary=_stand_in(tmp_path, unhealthy_s=1.0)) as server:
        client = await Client.connect(server.address)  # raised "Frontend is not healthy yet" before

    assert client.service_client.config.target_host == server.address


def test_a_frontend_that_never_becomes_healthy_times_out_naming_the_refusal_and_is_stopped(
    tmp_path: Path,
) -> None:
    server = DevServer(binary=_stand_in(tmp_path, unhealthy_s=3600), startup_timeout_s=2.0)

    with pytest.raises(TimeoutError, match="Frontend is not healthy yet"):
        server.start()

    assert wait_until(lambda: not _listens(server.port), timeout_s=5)  # stopped, not left behind


def test_a_server_that_exits_while_starting_is_reported_with_its_output(tmp_path: Path) -> None:
    binary = tmp_path / "temporal"
    binary.write_text("#!/bin/sh\necho 'no such flag: --headless' >&2\nexit 3\n")
    binary.chmod(0o755)

    with pytest.raises(RuntimeError, match=r"exited with 3: no such flag: --headless"):
        DevServer(binary=str(binary)).start()


def test_ctrl_c_while_waiting_for_the_frontend_stops_it_and_raises_keyboard_interrupt(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""\
        import signal, sys
        from appevents._demo.devserver import DevServer
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal
        server = DevServer(binary={_stand_in(tmp_path, unhealthy_s=3600)!r}, startup_timeout_s=50)
        try:
            print("STARTING", flush=True)
            server.start()
        except KeyboardInterrupt:
            print("INTERRUPTED", server.port, flush=True)
        """
    )
    app = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None
        assert app.stdout.readline().strip() == "STARTING"
        time.sleep(1.0)  # inside the wait: the stand-in listens and refuses
        app.send_signal(signal.SIGINT)
        out, _ = app.communicate(timeout=10)
    finally:
        app.kill()
    assert app.returncode == 0
    word, port = out.split()
    assert word == "INTERRUPTED"
    assert not _listens(int(port))


def test_a_server_that_accepts_and_never_answers_times_out_at_the_deadline(tmp_path: Path) -> None:
    binary = tmp_path / "temporal"
    binary.write_text(
        f"#!{sys.executable}\n"
        "import socket, sys, time\n"
        "listener = socket.create_server(('127.0.0.1', int(sys.argv[sys.argv.index('--port') + 1])))\n"
        "held = []\n"
        "while True:\n"
        "    held.append(listener.accept()[0])  # accepted, never answered\n"
    )
    binary.chmod(0o755)
    server = DevServer(binary=str(binary), startup_timeout_s=2.0)
    started = time.monotonic()

    with pytest.raises(TimeoutError, match="still refuses clients: no answer"):
        server.start()

    assert time.monotonic() - started < 10  # the deadline holds; a connect that never completes does not
