"""One event's way through the code: which of our files and functions run, in order, from ``EventStore.publish`` of
a built event to the destination call (the SQLite ``execute`` of the local log, or the Dapr gRPC call), on the
publishing thread and the exporter's threads.

    .venv/bin/python bench/event_path.py [local|dapr]

Not a speed measurement: a map for reading the code (and for keeping the way short). ``sys.setprofile`` and
``threading.setprofile`` record every call into ``src/`` and ``exporters/``; the pipeline is built and warmed up
with one event first, so first-use work (imports, the build, the first connection) is not on the path shown. Runs
of calls within one function are collapsed. ``dapr`` starts the sidecar stand-in (``tests/support/dapr_sidecar.py``)
and uses binding mode. The summary gives the distinct files up to the destination call and how often the way
enters the event-store module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OURS = (str(ROOT / "src"), str(ROOT / "exporters"))


def main() -> None:
    destination = sys.argv[1] if len(sys.argv) > 1 else "local"
    if destination not in ("local", "dapr"):
        raise SystemExit("usage: bench/event_path.py [local|dapr]")
    sidecar = None
    os.environ["APPEVENTS_LOCAL_PATH"] = str(Path(tempfile.mkdtemp()) / "events.db")
    os.environ["APPEVENTS_EXPORTERS"] = destination
    os.environ["APPEVENTS_DAPR_MODE"] = "binding"
    os.environ.pop("APPEVENTS_SPOOL_PATH", None)
    if destination == "dapr":
        script = str(ROOT / "tests" / "support" / "dapr_sidecar.py")
        command = [sys.executable, script, "--component", "eventstore=bindings.noop"]
        sidecar = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert sidecar.stdout is not None
        _, grpc_port, http_port = sidecar.stdout.readline().split()
        os.environ.update({"DAPR_GRPC_PORT": grpc_port, "DAPR_HTTP_PORT": http_port})
    try:
        trace(destination)
    finally:
        if sidecar is not None:
            sidecar.kill()
            sidecar.wait()


def trace(destination: str) -> None:
    from appevents import Event, EventStore

    calls: list[tuple[str, str, str]] = []
    active = [False]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if not active[0]:
            return
        thread = threading.current_thread().name
        if event == "call":
            code = frame.f_code
            if code.co_filename.startswith(OURS):
                calls.append((thread, os.path.relpath(code.co_filename, ROOT), code.co_qualname))
            elif code.co_filename.endswith("grpc/_channel.py") and code.co_qualname.endswith(("__call__", "with_call")):
                calls.append((thread, "<grpc>", code.co_qualname))
        elif event == "c_call" and "sqlite3" in repr(arg) and "execute" in getattr(arg, "__qualname__", ""):
            calls.append((thread, "<sqlite3>", arg.__qualname__))

    threading.setprofile(profile)  # before the first publish: the exporter threads start with it
    EventStore.publish(Event(event_type="warm.up", data={"n": 0}))
    EventStore.flush_sync(10)
    time.sleep(0.5)
    main_thread = threading.current_thread().name
    sys.setprofile(profile)
    event = Event(event_type="order.received", data={"order_id": 1})
    active[0] = True
    EventStore.publish(event)
    calls.append((main_thread, "<publish returned>", ""))
    returned = len(calls)
    EventStore.flush_sync(10)  # the flush itself is not on the way: its calls on this thread are left out
    active[0] = False
    sys.setprofile(None)
    threading.setprofile(None)  # type: ignore[arg-type]
    EventStore.shutdown(10)

    path = calls[:returned] + [c for c in calls[returned:] if c[0] != main_thread]
    collapsed = [c for i, c in enumerate(path) if i == 0 or path[i - 1] != c]
    end = next((i for i, c in enumerate(collapsed) if c[1] in ("<sqlite3>", "<grpc>")), len(collapsed) - 1)
    collapsed = collapsed[: end + 1]
    for thread, file, function in collapsed:
        print(f"{thread[:24]:24} {file}:{function}")
    files = [file for _, file, _ in collapsed if not file.startswith("<")]
    runs = [file for i, file in enumerate(files) if i == 0 or files[i - 1] != file]
    print(f"\n{destination}: {len(dict.fromkeys(files))} distinct files up to the destination call")
    print("files in order (runs collapsed): " + " -> ".join(Path(f).name for f in runs))
    entries = sum(1 for f in runs if f.endswith(("/store.py", "/_event_store.py")))  # store.py: its former name
    print(f"entries into the event-store module: {entries}")


if __name__ == "__main__":
    main()
