"""The edges of a process's life, in real processes: interpreter exit, SIGTERM whichever thread published first, a
signal handler that publishes. A publish that returned True is delivered (or reported lost by name); one that
cannot be is answered False and counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from appevents import AppEventsSettings, Event, EventStore, configure
from appevents._sqlite_log import LocalEventLog
from appevents.exporting import ExportOutcome
from support.signal_masks import FAULTS, PROCESS_SIGNALS, asleep, leaves_process_signals_alone
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

SRC = Path(__file__).resolve().parents[2] / "src"


def _run(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.run(
        [sys.executable, str(path)],
        env={**os.environ, "APPEVENTS_LOCAL_PATH": str(tmp_path / "events.db"), **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _types(tmp_path: Path) -> list[str]:
    log = LocalEventLog(tmp_path / "events.db")
    try:
        return [event.event_type for event in log]
    finally:
        log.close()


# -- interpreter exit --------------------------------------------------------------------------------------------
def test_a_publish_from_an_atexit_handler_is_answered_false_and_counted_never_true_and_lost(tmp_path: Path) -> None:
    done = _run(
        """
        import atexit
        from appevents import AppEventsSettings, Event, EventStore, configure

        def late() -> None:
            answers = [EventStore.publish(Event(event_type="late.event")) for _ in range(100)]
            print("LATE", answers.count(True), answers.count(False), EventStore.unpublished_count(), flush=True)

        atexit.register(late)  # before configure: atexit runs it after the exit drain
        configure(AppEventsSettings(exporters=["local"]))
        assert EventStore.publish(Event(event_type="early.event"))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("LATE")]
    _, true, false, unpublished = line.split()
    types = _types(tmp_path)
    assert types.count("early.event") == 1
    assert types.count("late.event") == int(true), "every True was delivered"
    assert int(false) == 100 - int(true) and int(unpublished) >= int(false), "every False was counted"
    assert "published after the exit drain" in done.stderr


def test_a_daemon_thread_publishing_through_exit_loses_nothing_it_was_told_was_taken(tmp_path: Path) -> None:
    claims = tmp_path / "claims.txt"
    done = _run(
        f"""
        import os, threading, time
        from appevents import AppEventsSettings, Event, EventStore, configure

        configure(AppEventsSettings(exporters=["local"]))
        claims = os.open({str(claims)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

        def publish_forever() -> None:
            n = 0
            while True:
                if EventStore.publish(Event(event_type="daemon.event", data={{"n": n}})):
                    os.write(claims, f"{{n}}\\n".encode())
                n += 1
                time.sleep(0.0005)  # a worker's pace (a tight loop through finalization can crash CPython itself)

        threading.Thread(target=publish_forever, daemon=True).start()
        time.sleep(0.5)  # then the main thread ends: exit drain while the daemon thread keeps publishing
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    claimed = {int(n) for n in claims.read_text().split()}
    log = LocalEventLog(tmp_path / "events.db")
    stored = {event.data["n"] for event in log}
    log.close()
    assert len(claimed) > 100
    assert claimed <= stored, f"{len(claimed - stored)} event(s) answered True were lost"


# -- SIGTERM -------------------------------------------------------------------------------------------------------
SIGTERM_APP = """
import sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from appevents import Event, EventStore

def publish() -> None:
    for n in range(1000):
        assert EventStore.publish(Event(event_type="queued.event", data={"n": n}))

if sys.argv[1] == "thread_pool":  # an activity on a thread pool, say
    with ThreadPoolExecutor(1) as pool:
        pool.submit(publish).result()
else:
    thread = threading.Thread(target=publish)
    thread.start()
    thread.join()
print("READY", flush=True)
time.sleep(60)
sys.exit("SIGTERM did not end the process")
"""


@pytest.mark.parametrize("first_publisher", ["thread_pool", "thread"])
def test_sigterm_drains_whichever_thread_published_first(tmp_path: Path, first_publisher: str) -> None:
    app = tmp_path / "app.py"
    app.write_text(SIGTERM_APP)
    env = {
        **os.environ,
        "APPEVENTS_EXPORTERS": "local",
        "APPEVENTS_LOCAL_PATH": str(tmp_path / "events.db"),
        "APPEVENTS_SCHEDULE_DELAY_MS": "600000",  # the events wait in the queue until the drain
    }
    process = subprocess.Popen(
        [sys.executable, str(app), first_publisher], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "READY"
        assert wait_until(lambda: asleep(process.pid), timeout_s=30)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert _types(tmp_path).count("queued.event") == 1000


WHO_TAKES_IT_APP = """
import os, signal, threading, time
from appevents import AppEventsSettings, Event, EventStore, configure

configure(AppEventsSettings(exporters=["local", "memory"]))
assert EventStore.publish(Event(event_type="taken.event"), wait=True)
assert [t for t in threading.enumerate() if t.name.startswith("appevents-")], "the engine's threads run"
# Now the main thread blocks SIGTERM too: the kernel must hand it to a thread that does not block it, or keep it
# pending for the process. Only the engine's threads are left to take it.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
os.kill(os.getpid(), signal.SIGTERM)
deadline = time.monotonic() + 1  # a thread the kernel woke for it takes it within milliseconds
while signal.SIGTERM in signal.sigpending() and time.monotonic() < deadline:
    time.sleep(0.01)
print("PENDING" if signal.SIGTERM in signal.sigpending() else "TAKEN BY ANOTHER THREAD", flush=True)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # the main thread takes it: the handler, the drain
"""


def test_sigterm_is_left_to_the_application_threads_never_taken_by_an_engine_thread(tmp_path: Path) -> None:
    """CPython runs a Python handler on the main thread only, and a main thread asleep wakes only for a signal
    delivered to itself: one taken by an engine thread left the SIGTERM handler unrun for as long as the main
    thread slept (12 of 150 SIGTERMs after a publish burst on a loaded machine waited out a 60 s sleep)."""
    done = _run(WHO_TAKES_IT_APP, tmp_path)
    assert done.stdout.splitlines() == ["PENDING"], done.stderr
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert _types(tmp_path) == ["taken.event"]


def test_the_engine_threads_block_the_process_signals_and_leave_the_callers_mask_alone(tmp_path: Path) -> None:
    masks: list[set[int]] = []

    class RecordingMask:
        def export_events(self, batch: object) -> ExportOutcome:
            masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))
            return ExportOutcome()

        def shutdown(self) -> None:
            pass

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    pipeline = configure(
        AppEventsSettings(exporters=[], spool_path=tmp_path / "spool.db"), exporters={"recording": RecordingMask()}
    )
    try:
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before, "the configuring thread's mask is restored"
        assert EventStore.publish(Event(event_type="masked.event"), wait=True)
        spool_writer = next(thread for thread in threading.enumerate() if thread.name == "appevents-spool")
        assert leaves_process_signals_alone(spool_writer)
    finally:
        pipeline.shutdown()
    [exporter_thread_mask] = masks
    assert exporter_thread_mask >= PROCESS_SIGNALS and not FAULTS & exporter_thread_mask


def test_a_pipeline_built_on_first_publish_starts_its_threads_with_the_process_signals_blocked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "local")
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert EventStore.publish(Event(event_type="first.event"), wait=True)  # built in the background
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    [channel] = [thread for thread in threading.enumerate() if thread.name == "appevents-local"]
    assert leaves_process_signals_alone(channel)


def test_sigterm_without_a_pipeline_ends_the_process_as_without_appevents(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("import time, appevents\nprint('READY', flush=True)\ntime.sleep(60)\n")
    process = subprocess.Popen([sys.executable, str(app)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "READY"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM, "killed by the signal, as the default disposition does"


# -- a signal handler that publishes --------------------------------------------------------------------------------
STORM_APP = """
import signal, sys, threading, time
from appevents import AppEventsSettings, Event, EventStore, configure

class Slow:
    def export_events(self, batch):
        time.sleep(0.05)  # the queue behind it stays full: every publish meets the drop path
        from appevents.exporting import ExportOutcome
        return ExportOutcome()

    def shutdown(self):
        pass

spool = sys.argv[2] if sys.argv[1] == "spool" else None
configure(
    AppEventsSettings(exporters=[], spool_path=spool, max_queue_size=20, spool_commit_interval_ms=200,
                      metrics_event_type_limit=1000),
    exporters={"slow": Slow()},
)
handled = 0

def on_usr1(signum, frame):
    global handled
    handled += 1
    EventStore.publish(Event(event_type=f"from.handler{handled % 50}"))  # new types too: the admit path

signal.signal(signal.SIGUSR1, on_usr1)
print("READY", flush=True)
deadline = time.monotonic() + 3
n = 0
while time.monotonic() < deadline:
    EventStore.publish(Event(event_type=f"from.main{n % 50}"))
    n += 1
stats = EventStore.stats()
for name, s in stats.items():
    assert s.accepted == s.delivered + s.failed + s.dropped + s.pending, (name, s)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the storm may outlast us: at exit Python restores the default
print("DONE", handled, n, flush=True)
EventStore.shutdown(2)
"""


@pytest.mark.parametrize("mode", ["memory", "spool"])
def test_a_signal_storm_whose_handler_publishes_never_deadlocks(tmp_path: Path, mode: str) -> None:
    app = tmp_path / "app.py"
    app.write_text(STORM_APP)
    process = subprocess.Popen(
        [sys.executable, str(app), mode, str(tmp_path / "spool.db")],
        env={**os.environ, "APPEVENTS_LOCAL_PATH": str(tmp_path / "events.db")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "READY"
        deadline = time.monotonic() + 3.5
        sent = 0
        while time.monotonic() < deadline and process.poll() is None:
            process.send_signal(signal.SIGUSR1)
            sent += 1
            time.sleep(0.0005)
        out, err = process.communicate(timeout=30)  # a deadlocked child never answers: the timeout fails the test
    finally:
        process.kill()
    assert process.returncode == 0, err
    [done] = [line for line in out.splitlines() if line.startswith("DONE")]
    assert int(done.split()[1]) > 100, f"the handler ran ({sent} signals sent)"
