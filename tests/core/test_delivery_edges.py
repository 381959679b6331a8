"""Delivery at the edges of durable mode: a full or failing disk, a spool that cannot be used, a replay beside live
events, rows of another host. In every test: accepted = delivered + failed + dropped + pending, per stage."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from appevents import AppEventsSettings, ConfigurationError, DeliveryStats, Event, EventStore, configure
from appevents._spool import NETWORK_FILESYSTEMS, Spool, filesystem_type
from appevents._sqlite_log import LocalEventLog
from appevents.exporting import EncodedEvent, ExportOutcome
from support.kill_loop import kill_loop
from support.metric_points import Metrics
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


class Recorder:
    """An encoded-path exporter that is up (or down) and records what it was given, in order."""

    def __init__(self, up: bool = True) -> None:
        self.up = threading.Event()
        if up:
            self.up.set()
        self.delivered: list[str] = []
        self.lock = threading.Lock()

    def export_events(self, batch: Sequence[EncodedEvent]) -> ExportOutcome:
        if not self.up.is_set():
            return ExportOutcome(retry=list(batch), retry_reason="UNAVAILABLE: down")
        with self.lock:
            self.delivered.extend(event.event_id for event in batch)
        return ExportOutcome()

    def shutdown(self) -> None:
        pass


def assert_identity(stats: dict[str, DeliveryStats]) -> None:
    for name, s in stats.items():
        assert s.accepted == s.delivered + s.failed + s.dropped + s.pending, (name, s)


def _settings(spool: Path, **overrides: object) -> AppEventsSettings:
    values: dict[str, object] = {"exporters": [], "spool_path": spool, "schedule_delay_ms": 20}
    values.update(overrides)
    return AppEventsSettings(**values)  # type: ignore[arg-type]


# -- a full disk -------------------------------------------------------------------------------------------------
class SmallDisk:
    """A filesystem that can be filled and freed again: a 4 MiB tmpfs where mounting is allowed, else SQLite's
    own size limit on the spool connection (``PRAGMA max_page_count``: the same SQLITE_FULL a full disk gives)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted = False
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)], capture_output=True, check=False
        )
        self.mounted = mount.returncode == 0
        self.filler = root / "filler"

    def fill(self) -> None:
        if self.mounted:
            with open(self.filler, "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            return
        writer = EventStore.pipeline().writer  # type: ignore[union-attr]
        db = writer.spool._db  # type: ignore[union-attr]
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count = {int(pages)}")

    def free(self) -> None:
        if self.mounted:
            self.filler.unlink()
            return
        writer = EventStore.pipeline().writer  # type: ignore[union-attr]
        writer.spool._db.execute("PRAGMA max_page_count = 1073741823")  # type: ignore[union-attr]

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    disk = SmallDisk(root)
    try:
        yield disk
    finally:
        EventStore.shutdown(1)
        disk.close()


def test_a_full_disk_never_stops_delivery_to_a_destination_that_is_up(
    small_disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    dest = Recorder()
    configure(_settings(small_disk.root / "spool.db"), exporters={"dest": dest})
    assert EventStore.publish(Event(event_type="before.full"), wait=True)
    small_disk.fill()
    events = [Event(event_type="while.full", data={"n": n, "pad": "x" * 200}) for n in range(3000)]
    for event in events:
        assert EventStore.publish(event)
    started = time.monotonic()
    assert EventStore.publish(Event(event_type="while.full"), wait=True, timeout_s=30) is False, "not durable"
    assert time.monotonic() - started < 15, "a failed commit settles its events at once, not at the timeout"
    assert EventStore.flush_sync(30), "nothing stays pending forever"
    stats = EventStore.stats()
    assert_identity(stats)
    assert stats["spool"].failed == stats["spool"].failed_reasons["spool_error"] > 0
    assert set(e.event_id for e in events) <= set(dest.delivered), "every event reached the destination"
    assert stats["dest"].delivered == len(dest.delivered) == 3002
    assert any("went on" in r.getMessage() or "failed" in r.getMessage() for r in caplog.records)

    small_disk.free()
    recovered = Event(event_type="after.free")
    assert wait_until(lambda: EventStore.publish(Event(event_type="probe.write"), wait=True, timeout_s=5), 30)
    assert EventStore.publish(recovered, wait=True, timeout_s=10), "the writer recovers when space returns"
    assert EventStore.flush_sync(10)
    assert recovered.event_id in dest.delivered
    assert any("takes events again" in r.getMessage() for r in caplog.records)
    assert_identity(EventStore.stats())


def test_a_full_disk_with_the_destination_down_settles_everything_and_bounds_memory(small_disk: SmallDisk) -> None:
    dest = Recorder(up=False)
    configure(_settings(small_disk.root / "spool.db", max_queue_size=500), exporters={"dest": dest})
    assert EventStore.publish(Event(event_type="before.full"), wait=True)
    small_disk.fill()
    for n in range(3000):
        EventStore.publish(Event(event_type="while.full", data={"n": n, "pad": "x" * 200}))
    assert EventStore.pipeline().writer.flush(time.monotonic() + 30)  # type: ignore[union-attr]
    assert wait_until(lambda: EventStore.stats()["dest"].pending <= 1, 30), EventStore.stats()
    stats = EventStore.stats()
    assert_identity(stats)
    dest_stats = stats["dest"]
    # In memory, best effort: failed (destination down) or dropped at a memory bound (the writer's inbox, the
    # channel's queue), each counted once, none pending forever.
    assert stats["spool"].dropped + dest_stats.failed + dest_stats.dropped == 3000
    assert dest_stats.dropped_reasons.keys() <= {"queue_full"}
    assert dest_stats.pending <= 1  # the one durable event, kept in the spool


# -- a spool that cannot be used -----------------------------------------------------------------------------------
def test_a_corrupt_spool_found_on_first_use_leaves_the_exporters_on_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, reader: InMemoryMetricReader
) -> None:
    spool = tmp_path / "spool.db"
    spool.write_bytes(b"SQLite format 3\0" + os.urandom(8192))
    log = tmp_path / "events.db"
    monkeypatch.setenv("APPEVENTS_EXPORTERS", "local")
    monkeypatch.setenv("APPEVENTS_LOCAL_PATH", str(log))
    monkeypatch.setenv("APPEVENTS_SPOOL_PATH", str(spool))
    with caplog.at_level(logging.ERROR, logger="appevents"):
        for n in range(20):
            assert EventStore.publish(Event(event_type="order.received", data={"n": n})) is True
        assert EventStore.flush_sync(10)
    pipeline = EventStore.pipeline()
    assert pipeline is not None and pipeline.durability_lost is not None and str(spool) in pipeline.durability_lost
    assert LocalEventLog(log).count() == 20, "the exporters went on in memory"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "WITHOUT durability" in errors[0]
    assert_identity(EventStore.stats())
    unusable = Metrics(reader).values("appevents.spool.unusable")
    assert unusable == {frozenset({("spool.path", str(spool))}): 1}, unusable


def test_publish_returns_false_for_what_is_known_to_be_refused(tmp_path: Path) -> None:
    dest = Recorder()
    released = threading.Event()
    original = dest.export_events

    def export_events(batch: Sequence[EncodedEvent]) -> ExportOutcome:
        released.wait(30)  # a destination that hangs: the queue behind it fills up
        return original(batch)

    dest.export_events = export_events  # type: ignore[method-assign]
    configure(AppEventsSettings(exporters=[], max_queue_size=10, schedule_delay_ms=20), exporters={"dest": dest})
    results = [EventStore.publish(Event(event_type="a.b")) for _ in range(100)]
    released.set()
    assert EventStore.flush_sync(10)
    assert results[:10] == [True] * 10 and results.count(False) > 0, "a full queue refuses: False"
    stats = EventStore.stats()["dest"]
    assert stats.dropped_reasons == {"queue_full": results.count(False)}, "each False is one counted refusal"
    assert stats.accepted == 100
    assert_identity(EventStore.stats())


# -- a replay beside live events -------------------------------------------------------------------------------------
def _orphan_rows(spool: Path, exporters: str, count: int, host: str | None = None) -> str:
    """Rows of an owner whose process is gone (closed), as a killed publisher leaves them."""
    owner = uuid.uuid4().hex
    s = Spool(spool, max_bytes=1 << 30, exporters=exporters.split(","))
    s.close()
    db = sqlite3.connect(spool)
    with db:
        db.execute(
            "INSERT INTO owners (owner, pid, started, host, exporters, heartbeat_ns, closed)"
            " VALUES (?, 1, '', ?, ?, 0, ?)",
            (owner, host or os.uname().nodename, exporters, 0 if host else 1),
        )
        body = Event(event_type="replayed.event").model_dump_json()
        db.executemany(
            "INSERT INTO events (owner, event_id, event_type, body, attributes, timestamp_ns, trace_id, span_id,"
            " trace_flags) VALUES (?, ?, 'replayed.event', ?, '{}', 0, '0', '0', 0)",
            [(owner, f"orphan-{n}", body) for n in range(count)],
        )
    db.close()
    return owner


def test_a_fresh_event_is_not_starved_by_a_replay(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    _orphan_rows(spool, "dest", 100_000)
    dest = Recorder()
    configure(_settings(spool, max_export_batch_size=512), exporters={"dest": dest})
    assert wait_until(lambda: len(dest.delivered) > 0, 30), "the replay started"
    fresh = Event(event_type="fresh.event")
    assert EventStore.publish(fresh)
    assert wait_until(lambda: fresh.event_id in dest.delivered, 60)
    with dest.lock:
        position = dest.delivered.index(fresh.event_id)
    replayed_before = sum(1 for i in dest.delivered[:position] if i.startswith("orphan-"))
    assert replayed_before < 100_000 - 10 * 512, "the fresh event came out before the end of the replay"
    assert wait_until(lambda: EventStore.stats()["dest"].delivered == 100_001, 60), "the replay goes on to the end"
    assert sum(1 for i in dest.delivered if i.startswith("orphan-")) == 100_000
    assert_identity(EventStore.stats())


# -- rows of another host ------------------------------------------------------------------------------------------
def test_rows_of_an_owner_on_another_host_are_never_adopted(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    _orphan_rows(spool, "dest", 50, host="another-host-whose-clock-stepped")
    dest = Recorder()
    configure(_settings(spool), exporters={"dest": dest})
    assert EventStore.publish(Event(event_type="mine.event"), wait=True)
    assert EventStore.flush_sync(10)
    writer = EventStore.pipeline().writer  # type: ignore[union-attr]
    writer._claim_orphans()  # the periodic scan, now rather than in 5 s
    assert EventStore.flush_sync(10)
    assert [i for i in dest.delivered if i.startswith("orphan-")] == []
    db = sqlite3.connect(spool)
    assert db.execute("SELECT COUNT(*) FROM events WHERE event_id LIKE 'orphan-%'").fetchone()[0] == 50
    db.close()


def test_a_spool_on_a_network_filesystem_is_told_apart() -> None:
    mounts = (
        "/dev/vda / ext4 rw 0 0\n"
        "server:/export /mnt/shared nfs4 rw 0 0\n"
        "//host/share /mnt/smb\\040share cifs rw 0 0\n"
        "tmpfs /mnt/shared/local tmpfs rw 0 0\n"
    )
    assert filesystem_type(Path("/mnt/shared/spool"), mounts) == "nfs4"
    assert filesystem_type(Path("/mnt/smb share/x"), mounts) == "cifs"
    assert filesystem_type(Path("/mnt/shared/local/x"), mounts) == "tmpfs"
    assert filesystem_type(Path("/var/lib/app"), mounts) == "ext4"
    assert {"nfs4", "cifs"} <= NETWORK_FILESYSTEMS and "tmpfs" not in NETWORK_FILESYSTEMS


# -- orphans go where they were published for ------------------------------------------------------------------------
ORPHAN_APP = """
import sys
from appevents import AppEventsSettings, Event, EventStore, configure

configure(AppEventsSettings(exporters=["local"], local_path=sys.argv[1], spool_path=sys.argv[2]))
for n in range(500):
    assert EventStore.publish(Event(event_type="of.a", data={"n": n}), wait=(n % 50 == 49))
print("COMMITTED", flush=True)
sys.stdin.read()  # killed here, its events still in the spool (its log cannot be written)
"""


def _killed_publisher(tmp_path: Path, log: Path, spool: Path) -> None:
    """Publisher A: exporter ``local`` at ``log``, whose directory is a file for now (every write fails, its rows
    stay in the spool); killed with SIGKILL once its 500 events are committed."""
    app = tmp_path / "a.py"
    app.write_text(ORPHAN_APP)
    process = subprocess.Popen(
        [sys.executable, str(app), str(log), str(spool)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "COMMITTED"
    finally:
        process.kill()
        process.wait(10)


def test_an_orphan_goes_only_to_the_destinations_it_was_published_for(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    blocked = tmp_path / "a-logs"
    blocked.write_text("not a directory yet")
    log_a = blocked / "events.db"
    _killed_publisher(tmp_path, log_a, spool)
    blocked.unlink()

    # B: local at another file, plus another exporter: A's rows are not B's to deliver anywhere.
    log_b = tmp_path / "b-events.db"
    other = Recorder()
    configure(_settings(spool, exporters=["local"], local_path=log_b), exporters={"other": other})
    assert EventStore.publish(Event(event_type="of.b"), wait=True)
    assert EventStore.flush_sync(10)
    EventStore.pipeline().writer._claim_orphans()  # type: ignore[union-attr]  # the periodic scan, now
    assert EventStore.flush_sync(10)
    assert [i for i in other.delivered if i.startswith("of.a")] == []
    assert {e.event_type for e in LocalEventLog(log_b)} == {"of.b"}
    assert len(other.delivered) == 1
    assert_identity(EventStore.stats())
    assert EventStore.shutdown(5)

    # C: A's destination again, beside another exporter: A's rows go to A's log only, from A's cursor.
    witness = Recorder()
    configure(_settings(spool, exporters=["local"], local_path=log_a), exporters={"witness": witness})
    assert wait_until(lambda: log_a.exists() and LocalEventLog(log_a).count() == 500, 30)
    assert EventStore.flush_sync(10)
    assert sorted(e.data["n"] for e in LocalEventLog(log_a)) == list(range(500))  # type: ignore[type-var]
    assert witness.delivered == []
    assert_identity(EventStore.stats())
    assert EventStore.shutdown(5)
    db = sqlite3.connect(spool)
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    db.close()


# -- duplicates after kill -9 ----------------------------------------------------------------------------------------
def test_duplicates_after_kill_9_are_bounded_by_what_was_in_flight(tmp_path: Path) -> None:
    result = kill_loop(tmp_path, rounds=6)
    assert not result.lost, f"{len(result.lost)} committed event(s) never delivered"
    unique = len(set(result.delivered))
    assert result.duplicates <= 0.02 * unique, f"{result.duplicates} duplicates of {unique} events"


def test_a_spool_on_a_network_filesystem_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Unit level: no NFS mount here, so the filesystem's type (read from /proc/mounts, tested above) is given.
    monkeypatch.setattr("appevents._spool.filesystem_type", lambda directory: "nfs4")
    with pytest.raises(ConfigurationError, match=r"network filesystem \(nfs4\)") as refused:
        configure(_settings(tmp_path / "spool.db"), exporters={"dest": Recorder()})
    assert "APPEVENTS_SPOOL_PATH" in str(refused.value)
    assert not (tmp_path / "spool.db").exists(), "refused before anything is created"
