"""Delivery across a crashing sidecar, and a SIGTERM with a deep queue that says exactly what it lost (issue 8).

Everything runs as real processes on loopback:

* the sidecar stand-in (``tests/support/dapr_sidecar.py``) in a child process, which a test SIGKILLs and starts
  again on the same ports (``--grpc-port``/``--http-port``), as a crashed daprd restarted by its supervisor;
* the endpoint behind its ``bindings.http`` component (:class:`HttpReceiver`) in this process, so the event ids
  that really arrived are counted here, apart from anything the app believes;
* the app: a child python that publishes through ``EventStore`` with ``APPEVENTS_EXPORTERS=dapr``, prints progress
  lines and, at the end, its stats as JSON.

The Dapr exporter runs in ``binding`` mode (one ``invoke_binding`` per event, the default wire contract), on
purpose: a crash cuts up to ``max_in_flight`` single-event calls, each of which the dead sidecar may or may not
have forwarded, so what at-least-once costs (duplicates with a spool; events that arrived yet are counted lost
without one) is bounded per event by ``max_in_flight`` and the tests check that bound. It is also the slowest mode
to catch up with a backlog (about 1k events/s through the stand-in), so the spool has the most to hold. In ``batch``
mode one call carries a whole export (512 events): a crash duplicates 0 or 512 at once and the bound says little.

Run with ``-s`` to see the measured numbers (longest publish call, duplicates, durations).
"""

from __future__ import annotations

import json
import os
import queue
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.dapr_sidecar import HttpReceiver, free_port

SIDECAR_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "dapr_sidecar.py"

#: Events the app publishes in the crash tests, and its pace (one per PACE_S: 4,000/s, paced with perf_counter).
EVENTS = 20_000
PACE_S = 0.000_25
#: The sidecar is killed once this many events were published, and started again this long after.
KILL_AFTER = 5_000
DOWN_S = 8.0
#: The exporter's calls in flight at once (``APPEVENTS_DAPR_MAX_IN_FLIGHT``, its default): at most this many calls
#: can have been forwarded by a sidecar that died (or a client that gave up) before the answer came.
MAX_IN_FLIGHT = 32

#: The app of the crash tests: paced publishing, a progress line at KILL_AFTER, then flush, shutdown, stats.
CRASH_APP = textwrap.dedent(
    """
    import dataclasses, gc, json, sys, time

    from appevents import AppEventsSettings, Event, EventStore, configure

    events, pace_s, mark, ids_path = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    clock = time.perf_counter
    # When garbage collections ran, in any thread (they hold the GIL but for finalizers): to explain a slow call.
    gc_runs = []
    gc_began = [0.0]

    def gc_clock(phase, info):
        if phase == "start":
            gc_began[0] = clock()
        else:
            gc_runs.append((gc_began[0], clock()))

    gc.callbacks.append(gc_clock)
    configure(AppEventsSettings(exporters=["dapr"]))
    durations = []
    slowest = (0.0, 0.0, 0.0, 0)  # wall s, thread CPU s, when it began, which one
    refused = 0
    ids = []
    start = clock()
    for n in range(events):
        ahead = start + n * pace_s - clock()
        if ahead > 0:
            time.sleep(ahead)
        event = Event(event_type="order.received", data={"n": n})
        cpu = time.thread_time()
        began = clock()
        ok = EventStore.publish(event)
        took = clock() - began
        durations.append(took)
        if took > slowest[0]:
            slowest = (took, time.thread_time() - cpu, began, n)
        refused += not ok
        ids.append(event.event_id)
        if n + 1 == mark:
            print("MARK", n + 1, flush=True)
    publish_s = clock() - start
    with open(ids_path, "w") as out:
        out.write("\\n".join(ids))
    print("PUBLISHED", events, flush=True)
    began = clock()
    flushed = EventStore.flush_sync(120)
    flush_s = clock() - began
    pipeline = EventStore.pipeline()
    clean = EventStore.shutdown()
    durations.sort()
    result = {
        "publish_s": publish_s,
        "flush_s": flush_s,
        "flushed": flushed,
        "clean_shutdown": clean,
        "refused": refused,
        "max_publish_s": durations[-1],
        "p99_publish_s": durations[int(len(durations) * 0.99)],
        "p999_publish_s": durations[int(len(durations) * 0.999)],
        "median_publish_s": durations[len(durations) // 2],
        "slowest_publish": {
            "wall_s": slowest[0],
            "thread_cpu_s": slowest[1],
            "gc_s": sum(max(0.0, min(e, slowest[2] + slowest[0]) - max(b, slowest[2])) for b, e in gc_runs),
            "n": slowest[3],
        },
        "gc_total_s": sum(e - b for b, e in gc_runs),
        "gc_longest_pause_s": max((e - b for b, e in gc_runs), default=0.0),
        "stats": {name: dataclasses.asdict(s) for name, s in pipeline.stats().items()},
    }
    print("RESULT " + json.dumps(result), flush=True)
    """
)

#: The app of the SIGTERM test. Its atexit handler is registered before appevents is imported: atexit handlers
#: run after the threading exit hooks (where appevents drains), so it sees the threads that outlived shutdown.
SIGTERM_APP = textwrap.dedent(
    """
    import atexit, json, threading

    atexit.register(lambda: print("THREADS " + json.dumps([t.name for t in threading.enumerate()]), flush=True))

    import os, signal, sys, time

    from appevents import AppEventsSettings, Event, EventStore, configure

    events, ids_path = int(sys.argv[1]), sys.argv[2]
    configure(AppEventsSettings(exporters=["dapr"]))
    ids = []
    for n in range(events):
        event = Event(event_type="order.received", data={"n": n})
        EventStore.publish(event)
        ids.append(event.event_id)
    with open(ids_path, "w") as out:
        out.write("\\n".join(ids))
    print("PUBLISHED", events, json.dumps({k: s.pending for k, s in EventStore.stats().items()}), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)  # interrupted: SIGTERM raises SystemExit here, and the exit drain runs
    sys.exit("SIGTERM did not end the process")
    """
)


class SidecarProcess:
    """The stand-in sidecar as a child process, forwarding binding ``eventstore`` to ``receiver_url``; its ports
    are chosen once, so it comes back on the same address after :meth:`kill`."""

    def __init__(self, receiver_url: str, log_path: Path, *, max_workers: int = 64) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self._receiver_url = receiver_url
        self._log_path = log_path
        self._max_workers = max_workers
        self.proc: subprocess.Popen[str] | None = None

    def env(self) -> dict[str, str]:
        """What the app's Dapr client reads (the shape of ``DaprSidecar.env()``, for the ``dapr_env`` fixture)."""
        return {
            "DAPR_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            "DAPR_HTTP_ENDPOINT": f"http://127.0.0.1:{self.http_port}",
            "DAPR_HEALTH_TIMEOUT": "5",
        }

    def start(self, timeout_s: float = 15.0) -> None:
        command = [
            sys.executable,
            str(SIDECAR_SCRIPT),
            "--component",
            f"eventstore=bindings.http@{self._receiver_url}",
            "--max-workers",
            str(self._max_workers),
            "--grpc-port",
            str(self.grpc_port),
            "--http-port",
            str(self.http_port),
        ]
        with open(self._log_path, "a") as log:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().split() if ready else []
        if line != ["READY", str(self.grpc_port), str(self.http_port)]:
            self.kill()
            raise RuntimeError(f"the sidecar stand-in did not start: {line!r}; see {self._log_path}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone, calls in flight die with the process."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


class App:
    """The app process: stdout read line by line on a thread (``expect`` waits for a line), stderr to a file."""

    def __init__(self, script: str, args: list[str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with open(stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", script, *args],
                env=dict(os.environ),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout_s: float) -> str:
        """The rest of the next line starting with ``prefix`` (other lines are skipped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no {prefix!r} line from the app in {timeout_s} s; stderr:\n{self.stderr()}"
                ) from None
            if line is None:
                raise AssertionError(f"the app ended before a {prefix!r} line; stderr:\n{self.stderr()}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def received_ids(receiver: HttpReceiver) -> tuple[Counter[str], int]:
    """Event ids of what the endpoint took (with multiplicity), and how many bodies were not a whole event."""
    ids: Counter[str] = Counter()
    broken = 0
    for body in receiver.bodies():
        try:
            ids[json.loads(body)["event_id"]] += 1
        except (ValueError, KeyError, TypeError):
            broken += 1
    return ids, broken


def wait_quiet(receiver: HttpReceiver, quiet_s: float = 0.3, timeout_s: float = 10.0) -> None:
    """Until the endpoint has had no new request for ``quiet_s`` (a forward already on its way lands first)."""
    deadline = time.monotonic() + timeout_s
    seen = -1
    while time.monotonic() < deadline:
        count = len(receiver.requests)
        if count == seen:
            return
        seen = count
        time.sleep(quiet_s)


def assert_identity(stats: dict[str, dict[str, Any]]) -> None:
    for name, s in stats.items():
        assert s["accepted"] == s["delivered"] + s["failed"] + s["dropped"] + s["pending"], (name, s)
        assert sum(s["failed_reasons"].values()) == s["failed"], (name, s)
        assert sum(s["dropped_reasons"].values()) == s["dropped"], (name, s)


def run_through_a_sidecar_crash(
    tmp_path: Path, receiver: HttpReceiver, dapr_env: Callable[..., None], **env: str
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Run the crash app against a sidecar killed after KILL_AFTER events and started again DOWN_S later; the
    app's result, the ids it published, and the test's own timings."""
    sidecar = SidecarProcess(receiver.url, tmp_path / "sidecar.log")
    dapr_env(
        sidecar,
        APPEVENTS_DAPR_MODE="binding",
        APPEVENTS_DAPR_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
        APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S="2",
        **env,
    )
    ids_path = tmp_path / "ids.txt"
    app: App | None = None
    timings: dict[str, Any] = {}
    try:
        sidecar.start()
        began = time.monotonic()
        app = App(CRASH_APP, [str(EVENTS), str(PACE_S), str(KILL_AFTER), str(ids_path)], tmp_path / "app.err")
        app.expect("MARK", timeout_s=30)
        sidecar.kill()
        killed = time.monotonic()
        timings["received_before_kill"] = len(receiver.requests)
        app.expect("PUBLISHED", timeout_s=30)
        timings["published_after_s"] = time.monotonic() - began
        timings["published_while_down"] = time.monotonic() - killed < DOWN_S
        time.sleep(max(0.0, killed + DOWN_S - time.monotonic()))
        timings["received_while_down"] = len(receiver.requests) - timings["received_before_kill"]
        sidecar.start()
        restarted = time.monotonic()
        timings["down_s"] = restarted - killed
        result = json.loads(app.expect("RESULT", timeout_s=150))
        assert app.wait(timeout_s=30) == 0, app.stderr()
        timings["caught_up_after_restart_s"] = time.monotonic() - restarted
        timings["total_s"] = time.monotonic() - began
        wait_quiet(receiver)
        result["stderr"] = app.stderr()
    finally:
        if app is not None:
            app.kill()
        sidecar.kill()
    return result, ids_path.read_text().split("\n"), timings


def show(title: str, figures: dict[str, Any]) -> None:
    print(
        f"\n{title}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    )


def publish_figures(result: dict[str, Any]) -> dict[str, Any]:
    slowest = result["slowest_publish"]
    return {
        "max_publish_ms": result["max_publish_s"] * 1000,
        "of_which_thread_cpu_ms": slowest["thread_cpu_s"] * 1000,
        "of_which_gc_ms": slowest["gc_s"] * 1000,
        "p999_publish_ms": result["p999_publish_s"] * 1000,
        "p99_publish_ms": result["p99_publish_s"] * 1000,
        "median_publish_us": result["median_publish_s"] * 1e6,
        "gc_longest_pause_ms": result["gc_longest_pause_s"] * 1000,
        "gc_total_s": result["gc_total_s"],
    }


@pytest.mark.timeout(120)
def test_durable_mode_delivers_every_event_across_a_sidecar_crash(
    tmp_path: Path, receiver: HttpReceiver, dapr_env: Callable[..., None]
) -> None:
    result, published, timings = run_through_a_sidecar_crash(
        tmp_path, receiver, dapr_env, APPEVENTS_SPOOL_PATH=str(tmp_path / "spool.db")
    )
    received, broken = received_ids(receiver)
    stats = result["stats"]
    duplicates = sum(received.values()) - len(received)
    show(
        "durable mode across a sidecar crash",
        {
            **publish_figures(result),
            "received": sum(received.values()),
            "distinct": len(received),
            "duplicates": duplicates,
            "broken_bodies": broken,
            "publish_s": result["publish_s"],
            "flush_s": result["flush_s"],
            **timings,
        },
    )

    assert len(published) == len(set(published)) == EVENTS
    # The crash happened while events were on their way: nothing got through the dead sidecar but the calls it was
    # forwarding as it died, and most events were still to be delivered when it came back.
    assert timings["received_while_down"] <= MAX_IN_FLIGHT, timings
    assert timings["received_before_kill"] + timings["received_while_down"] < EVENTS // 2, timings
    assert set(received) == set(published), (
        f"{len(set(published) - set(received))} published event(s) never arrived, "
        f"{len(set(received) - set(published))} unknown one(s) did"
    )
    assert result["flushed"] and result["clean_shutdown"] and result["refused"] == 0, result["stderr"]
    assert_identity(stats)
    assert stats["spool"]["accepted"] == stats["spool"]["delivered"] == EVENTS, stats["spool"]
    assert stats["dapr"]["accepted"] == stats["dapr"]["delivered"] == EVENTS, stats["dapr"]
    assert stats["dapr"]["failed"] == stats["dapr"]["dropped"] == stats["dapr"]["pending"] == 0, stats["dapr"]
    # At least once: an event is sent again only if its call was cut by the crash, at most the calls in flight.
    assert duplicates <= MAX_IN_FLIGHT, duplicates
    # Publishing never waited for the sidecar: the last event was published while it was down, before it was
    # started again (publishing the 15,000 events after the kill takes ~3.8 s at the app's pace; it is down 8 s).
    assert timings["published_while_down"], timings
    # How long one publish takes is a figure (printed above; bench/dapr_outage.py measures the slowest call under an
    # outage), not something a test on a shared machine can assert.


@pytest.mark.timeout(120)
def test_best_effort_mode_counts_every_event_it_could_not_deliver_during_a_sidecar_crash(
    tmp_path: Path, receiver: HttpReceiver, dapr_env: Callable[..., None]
) -> None:
    result, published, timings = run_through_a_sidecar_crash(tmp_path, receiver, dapr_env)
    received, broken = received_ids(receiver)
    dapr = result["stats"]["dapr"]
    # Without a spool, an event is delivered (acknowledged by the sidecar, which answers only once the endpoint took
    # it) or counted failed/dropped. A call the sidecar forwarded before it was killed, but never answered, is
    # counted failed and yet arrived: so the endpoint holds every delivered event plus at most the calls that were
    # in flight when the sidecar died. Exact equality cannot be had; this is the bound.
    forwarded_unacknowledged = len(received) - dapr["delivered"]
    show(
        "best effort across a sidecar crash",
        {
            **publish_figures(result),
            "delivered": dapr["delivered"],
            "failed": dapr["failed"],
            "dropped": dapr["dropped"],
            "failed_reasons": dapr["failed_reasons"],
            "distinct_received": len(received),
            "duplicates": sum(received.values()) - len(received),
            "forwarded_but_counted_lost": forwarded_unacknowledged,
            "broken_bodies": broken,
            **timings,
        },
    )

    assert len(published) == len(set(published)) == EVENTS
    assert timings["received_while_down"] <= MAX_IN_FLIGHT, timings
    assert set(received) <= set(published)
    assert result["flushed"] and result["refused"] == 0, result["stderr"]
    assert "spool" not in result["stats"]
    assert_identity(result["stats"])
    assert dapr["accepted"] == EVENTS and dapr["pending"] == 0, dapr
    assert dapr["delivered"] + dapr["failed"] + dapr["dropped"] == EVENTS, dapr
    assert dapr["failed"] > 0, "an 8 s outage with events queued must cost some (the retry window is 2 s)"
    assert set(dapr["failed_reasons"]) == {"unavailable"}, dapr
    assert not result["clean_shutdown"], "shutdown must report the loss"
    assert 0 <= forwarded_unacknowledged <= MAX_IN_FLIGHT, (len(received), dapr)
    assert len(received) + dapr["failed"] + dapr["dropped"] - EVENTS == forwarded_unacknowledged
    # The publish figures are printed only (bench/dapr_outage.py measures the slowest call under an outage).


#: The sidecar's worker threads and the endpoint's time per request in the SIGTERM test: at most
#: SIGTERM_WORKERS / SIGTERM_ENDPOINT_DELAY_S events per second (800/s), so the 10 s exit drain cannot deliver
#: all 20,000 and must say what it lost.
SIGTERM_WORKERS = 4
SIGTERM_ENDPOINT_DELAY_S = 0.005
_SHUTDOWN_WARNING = re.compile(r"shutdown \(within (?P<timeout>[\d.]+)s\) did not deliver everything — (?P<parts>.*)")
_DAPR_PART = re.compile(
    r"dapr: (?P<delivered>\d+) of (?P<accepted>\d+) delivered"
    r"(?:, (?P<failed>\d+) failed (?P<failed_reasons>\{[^}]*\}))?"
    r"(?:, (?P<dropped>\d+) dropped (?P<dropped_reasons>\{[^}]*\}))?"
    r"(?:, (?P<pending>\d+) undelivered)?"
)


@pytest.mark.timeout(90)
def test_sigterm_with_twenty_thousand_queued_binding_events_reports_exactly_what_was_lost(
    tmp_path: Path, receiver: HttpReceiver, dapr_env: Callable[..., None]
) -> None:
    receiver.delay_s = SIGTERM_ENDPOINT_DELAY_S
    sidecar = SidecarProcess(receiver.url, tmp_path / "sidecar.log", max_workers=SIGTERM_WORKERS)
    dapr_env(sidecar, APPEVENTS_DAPR_MODE="binding", APPEVENTS_DAPR_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT))
    ids_path = tmp_path / "ids.txt"
    app: App | None = None
    try:
        sidecar.start()
        app = App(SIGTERM_APP, [str(EVENTS), str(ids_path)], tmp_path / "app.err")
        queued = app.expect("PUBLISHED", timeout_s=60)
        signalled = time.monotonic()
        threads = json.loads(app.expect("THREADS", timeout_s=30))
        exit_code = app.wait(timeout_s=30)
        exit_s = time.monotonic() - signalled
        wait_quiet(receiver)
        stderr = app.stderr()
    finally:
        if app is not None:
            app.kill()
        sidecar.kill()
    published = ids_path.read_text().split("\n")
    received, broken = received_ids(receiver)

    warnings = [m for line in stderr.splitlines() if (m := _SHUTDOWN_WARNING.search(line))]
    assert len(warnings) == 1, stderr
    part = _DAPR_PART.search(warnings[0]["parts"])
    assert part is not None, warnings[0][0]
    reported = {k: int(part[k] or 0) for k in ("delivered", "accepted", "failed", "dropped", "pending")}
    lost = reported["failed"] + reported["dropped"] + reported["pending"]
    # A call in flight when the drain ran out of time is cancelled and counted failed, yet the sidecar may still
    # forward it (a handler that started finishes; daprd cannot take back a request the endpoint got either): at
    # most the exporter's calls in flight. Exact equality holds but for those: every event that did not arrive is
    # in the warning, and the warning overstates the loss by no more than the calls cut short.
    forwarded_but_counted_lost = len(received) + lost - EVENTS
    show(
        "SIGTERM with 20,000 queued binding events",
        {
            "queued_at_sigterm": queued,
            "exit_s": exit_s,
            "distinct_received": len(received),
            "duplicates": sum(received.values()) - len(received),
            **reported,
            "failed_reasons": part["failed_reasons"],
            "dropped_reasons": part["dropped_reasons"],
            "forwarded_but_counted_lost": forwarded_but_counted_lost,
            "broken_bodies": broken,
            "threads_at_exit": threads,
        },
    )

    assert exit_code == 128 + signal.SIGTERM, stderr
    assert len(published) == len(set(published)) == EVENTS
    assert set(received) <= set(published)
    assert float(warnings[0]["timeout"]) == 10.0
    assert reported["accepted"] == EVENTS
    assert reported["delivered"] + lost == EVENTS, reported
    assert 0 < len(received) < EVENTS, "the drain must deliver some, and cannot deliver all, in 10 s"
    assert reported["delivered"] <= len(received), "delivered means acknowledged by the sidecar: it arrived"
    assert 0 <= forwarded_but_counted_lost <= MAX_IN_FLIGHT, (len(received), reported)
    assert not [name for name in threads if name.startswith("appevents")], threads
    assert "threads still running" not in stderr
    assert exit_s < 10.0 + 5.0 + 3.0, "the drain is bounded: 10 s, plus the exporter's interrupt grace"
    assert "cannot schedule new futures" not in stderr
    # The sidecar answered all along: what the drain had no time for was lost to the shutdown, and the report must
    # not put it down to an unavailable destination (nor advise a spool "until the destination is back").
    assert "unavailable" not in (part["failed_reasons"] or ""), warnings[0][0]
    assert "CancelledError" not in stderr
