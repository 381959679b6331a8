"""A publisher killed with SIGKILL again and again, for the duplicates-after-kill test and bench/delivery_edges.

Run as a script it is one publisher: ~4,000 events/s (40 every 10 ms, the 40th with ``wait=True``) into a durable
spool whose one exporter appends the id of every event it is given to a file — what reached the destination,
duplicates included — and the ids of committed events (those before a ``wait=True`` that returned) to another.
:func:`kill_loop` runs it ``rounds`` times, each killed after 0.8 s, then once more to drain the orphans.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KillLoopResult:
    delivered: list[str]  # every id the destination was given, in order, duplicates included
    committed: set[str]  # ids whose commit the publisher saw confirmed

    @property
    def duplicates(self) -> int:
        return len(self.delivered) - len(set(self.delivered))

    @property
    def lost(self) -> set[str]:
        return self.committed - set(self.delivered)


def kill_loop(workdir: Path, rounds: int) -> KillLoopResult:
    spool, delivered, committed = workdir / "loop.db", workdir / "delivered.txt", workdir / "committed.txt"
    for round_ in range(rounds + 1):
        last = round_ == rounds
        args = [str(spool), str(delivered), str(committed), "last" if last else "kill"]
        process = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None and process.stdout.readline().strip() == "STARTED"
            if last:
                out, _ = process.communicate(timeout=120)
                if process.returncode != 0 or "LEFT 0" not in out:
                    raise RuntimeError(f"the draining run did not end cleanly: {out!r}")
            else:
                time.sleep(0.8)
                process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait(10)
    return KillLoopResult(delivered.read_text().split(), set(committed.read_text().split()))


class _FileRecorder:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def export_events(self, batch: Sequence[object]) -> object:
        from appevents.exporting import ExportOutcome

        os.write(self.fd, "".join(e.event_id + "\n" for e in batch).encode())  # type: ignore[attr-defined]
        return ExportOutcome()

    def shutdown(self) -> None:
        pass


def _publisher(spool: str, delivered: str, committed: str, last: bool) -> None:
    from appevents import AppEventsSettings, Event, EventStore, configure

    configure(AppEventsSettings(exporters=[], spool_path=spool), exporters={"rec": _FileRecorder(delivered)})
    claims = os.open(committed, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    print("STARTED", flush=True)
    deadline = time.monotonic() + (0.5 if last else 60)
    while time.monotonic() < deadline:
        ids = []
        for i in range(40):  # ~4,000 events/s
            event = Event(event_type="loop.event", data={"i": i})
            ids.append(event.event_id)
            EventStore.publish(event, wait=(i == 39))
        os.write(claims, "".join(i + "\n" for i in ids).encode())  # committed: the last one was waited for
        time.sleep(0.01)
    if last:
        assert EventStore.flush_sync(30)
        db = sqlite3.connect(spool)
        end = time.monotonic() + 90
        while db.execute("SELECT COUNT(*) FROM events").fetchone()[0] and time.monotonic() < end:
            time.sleep(0.05)  # the orphans of the killed rounds replay
        print("LEFT", db.execute("SELECT COUNT(*) FROM events").fetchone()[0], flush=True)
        EventStore.shutdown(10)


if __name__ == "__main__":
    _publisher(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "last")
