"""The bridge stopped mid-stream loses nothing it acknowledged: SIGTERM drains and exits (memory mode: what was
acknowledged was delivered), and in durable mode even kill -9 leaves every acknowledged event in the spool for the
next start."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest

from support.bridge_process import BridgeProcess, delivered, events, post, request_of
from support.dapr_sidecar import DaprSidecar, HttpReceiver
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


class Senders:
    """Clients sending 100-event requests in a loop until told to stop or the bridge is gone; they remember which
    events the bridge acknowledged (200) and what else they were answered."""

    def __init__(self, url: str, count: int = 4) -> None:
        self.url = url
        self.acknowledged: list[str] = []
        self.answers: list[int | str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def start(self) -> Senders:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, index: int) -> None:
        round_ = 0
        while not self._stop.is_set():
            bodies = [e.model_dump_json() for e in events(100, tag=f"s{index}-{round_}")]
            round_ += 1
            try:
                answer = post(self.url, request_of(*bodies), timeout_s=30)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                with self._lock:
                    self.answers.append(type(exc).__name__)
                return  # the bridge is gone
            with self._lock:
                self.answers.append(answer.status)
                if answer.status == 200:
                    self.acknowledged.extend(json.loads(b)["event_id"] for b in bodies)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)


def test_sigterm_mid_stream_delivers_everything_acknowledged_and_exits_cleanly(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver
) -> None:
    receiver.delay_s = 0.01
    bridge = start_bridge()
    senders = Senders(bridge.http_url).start()
    wait_until(lambda: len(senders.acknowledged) >= 1000, timeout_s=30)
    assert bridge.terminate() == 0  # drained: nothing it took was lost
    senders.stop()
    assert set(senders.answers) <= {200, 503, "URLError", "ConnectionResetError", "RemoteDisconnected"}
    arrived = [e["event_id"] for e in delivered(receiver)]
    assert set(senders.acknowledged) <= set(arrived)
    assert len(arrived) == len(set(arrived))  # and nothing twice
    assert "stopped;" in bridge.log()


def test_kill_9_in_durable_mode_keeps_every_acknowledged_event_for_the_next_start(
    start_bridge: Callable[..., BridgeProcess], receiver: HttpReceiver, sidecar: DaprSidecar, tmp_path: Path
) -> None:
    spool = {"APPEVENTS_SPOOL_PATH": str(tmp_path / "spool.db")}
    sidecar.stop()  # the destination is down: acknowledged means committed to the spool
    bridge = start_bridge(**spool)
    senders = Senders(bridge.http_url).start()
    wait_until(lambda: len(senders.acknowledged) >= 2000, timeout_s=30)
    assert bridge.proc is not None
    bridge.proc.kill()  # SIGKILL: no drain, no goodbye
    bridge.proc.wait(10)
    senders.stop()
    assert receiver.requests == []

    sidecar.start()
    sidecar.register("eventstore", "bindings.http", receiver.url)
    again = start_bridge(**spool)  # replays what the dead one acknowledged
    acknowledged = set(senders.acknowledged)
    wait_until(lambda: acknowledged <= {e["event_id"] for e in delivered(receiver)}, timeout_s=60)
    time.sleep(0.2)
    assert again.terminate() == 0
