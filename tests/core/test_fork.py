"""Forked processes (gunicorn/uvicorn workers, prefork pools, ``multiprocessing`` with fork): the child delivers
its own events and none of the parent's, drains at its normal exit, and the parent goes on unaffected.

The forking app runs in a child interpreter (forking pytest itself, with its threads, would test pytest).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from appevents._sqlite_log import LocalEventLog

pytestmark = pytest.mark.timeout(90)

APP = textwrap.dedent(
    """
    import os, sys
    from appevents import Event, EventStore

    def publish(who, count):
        for n in range(count):
            EventStore.publish(Event(event_type="fork.test", data={"who": who, "n": n}))

    publish("parent-before", 100)  # queued, maybe not yet delivered, when the children are forked
    children = []
    for name, ending in (("flushing-child", "flush"), ("exiting-child", "exit")):
        pid = os.fork()
        if pid == 0:
            publish(name, 200)
            if ending == "flush":
                assert EventStore.flush_sync(20), "the child's flush must work"
                print(name, EventStore.stats()["local"].accepted, EventStore.stats()["local"].delivered, flush=True)
            sys.exit(0)  # a normal exit: the exit drain delivers what is queued
        children.append(pid)
    publish("parent-after", 100)
    codes = [os.waitpid(pid, 0)[1] for pid in children]
    assert codes == [0, 0], codes
    assert EventStore.flush_sync(20)
    print("parent", EventStore.stats()["local"].accepted, EventStore.stats()["local"].delivered, flush=True)
    """
)


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "spool"])
def test_forked_children_deliver_their_own_events_exactly_once_and_none_of_the_parents(
    tmp_path: Path, durable: bool
) -> None:
    log_path = tmp_path / "events.db"
    env = {**os.environ, "APPEVENTS_EXPORTERS": "local", "APPEVENTS_LOCAL_PATH": str(log_path)}
    if durable:
        env["APPEVENTS_SPOOL_PATH"] = str(tmp_path / "spool.db")
    result = subprocess.run([sys.executable, "-c", APP], env=env, capture_output=True, text=True, timeout=80)
    assert result.returncode == 0, result.stderr
    assert "did not deliver" not in result.stderr, result.stderr
    # Counted by each process's own pipeline: the child handled its 200, not the parent's queue as well.
    assert sorted(result.stdout.splitlines()) == ["flushing-child 200 200", "parent 200 200"], result.stdout
    events = [stored.event() for stored in LocalEventLog(log_path).query()]
    by_who = Counter(str(event.data["who"]) for event in events)
    assert by_who == {"parent-before": 100, "flushing-child": 200, "exiting-child": 200, "parent-after": 100}
    pairs = Counter((event.data["who"], event.data["n"]) for event in events)
    assert set(pairs.values()) == {1}, "every event exactly once"
