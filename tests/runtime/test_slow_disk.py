"""A slow disk (protocol.md N6): every fsync a server waits for is timed, a slow one is logged
as ``disk_sync_slow`` (at most one line a second) and counted, and the slow-disk fault
(``SlowDisk`` on the admin port, ``pbkv cluster slow-disk``) lengthens each fsync.

The end-to-end story (a slowed primary replaced, nothing lost, its log saying why) is the demo's
``slow-disk`` scenario, run in ``tests/demo/test_demo_scenarios.py``.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbkv.core.durable import Snapshot, StreamRecord
from pbkv.core.effects import Persist, PersistSnapshot
from pbkv.core.kv_store import Limits
from pbkv.core.messages import Get, Put, Request
from pbkv.runtime.admin import (
    AdminError,
    AdminOk,
    AdminServer,
    AdminStatusReply,
    Heal,
    SlowDisk,
    fault_state,
)
from pbkv.runtime.disk import ReplicaDisk, StorageOptions
from pbkv.runtime.faults import Faults
from pbkv.runtime.logging import EventLogger
from pbkv.storage import FsyncPolicy

DELAY_S = 0.03


def write(index: int) -> Persist:
    request = Request("c", index, 0, Put(f"k{index}", "v"))
    return Persist((StreamRecord(index, 1, request),), sync=True)


def read(index: int) -> Persist:
    request = Request("c", index, 0, Get("k"))
    return Persist((StreamRecord(index, 1, request),), sync=False)


class Opened:
    def __init__(self, tmp_path: Path, fsync: FsyncPolicy, slow_sync_s: float) -> None:
        self.lines = io.StringIO()
        logger = EventLogger("server", "s1", lambda: 1, stream=self.lines)
        options = StorageOptions(str(tmp_path / "data"), fsync=fsync)
        self.disk, _ = ReplicaDisk.open(options, Limits(), logger, slow_sync_s)
        self.synced: list[float] = []
        self.disk.on_sync = self.synced.append

    def slow_lines(self) -> list[str]:
        return [line for line in self.lines.getvalue().splitlines() if "disk_sync_slow" in line]


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Opened]:
    disk = Opened(tmp_path, "always", slow_sync_s=DELAY_S / 2)
    yield disk
    disk.disk.close()


def test_an_fsync_slower_than_the_threshold_is_logged_with_its_duration(opened: Opened) -> None:
    opened.disk.persist(write(1))
    assert opened.slow_lines() == []  # a tmp disk's fsync is far below 15 ms
    opened.disk.faults.slow_disk(DELAY_S * 1000)
    opened.disk.persist(write(2))
    [line] = opened.slow_lines()
    assert "what=append" in line and "fsync=always" in line and "threshold_ms=15" in line
    assert int(line.split("duration_ms=")[1].split()[0]) >= DELAY_S * 1000
    counters = opened.disk.counters()
    assert counters["disk_slow_syncs"] == 1
    assert counters["disk_sync_ms_max"] >= DELAY_S * 1000
    assert len(opened.synced) == 2 and opened.synced[1] >= DELAY_S > opened.synced[0]


def test_slow_syncs_are_logged_at_most_once_a_second_and_all_counted(opened: Opened) -> None:
    opened.disk.faults.slow_disk(DELAY_S * 1000)
    for index in range(1, 5):
        opened.disk.persist(write(index))
    assert len(opened.slow_lines()) == 1
    assert opened.disk.counters()["disk_slow_syncs"] == 4


def test_a_batch_of_reads_is_not_synced_so_not_slowed_or_timed(opened: Opened) -> None:
    opened.disk.faults.slow_disk(DELAY_S * 1000)
    opened.disk.persist(read(1))
    assert opened.synced == [] and opened.slow_lines() == []


def test_a_write_is_fsynced_before_persist_returns_and_a_read_is_not(opened: Opened) -> None:
    """D1 with --fsync always: the host's persist of a Persist(sync=True) returns only when
    the write is durable, since the handler's reply follows it; a batch of reads waits for no
    fsync (the next one covers it)."""
    log = opened.disk.log
    opened.disk.persist(read(1))
    assert log.unsynced_bytes > 0
    syncs = log.syncs_total
    opened.disk.persist(write(2))
    assert (log.unsynced_bytes, log.syncs_total) == (0, syncs + 1)


def test_an_installed_snapshot_is_timed_and_slowed_too(opened: Opened) -> None:
    opened.disk.faults.slow_disk(DELAY_S * 1000)
    opened.disk.install(PersistSnapshot(Snapshot({"k": "v"}, (), 1, 1)))
    [line] = opened.slow_lines()
    assert "what=snapshot" in line


def test_everysec_times_its_worker_fsync_and_never_holds_the_loop(tmp_path: Path) -> None:
    opened = Opened(tmp_path, "everysec", slow_sync_s=DELAY_S / 2)
    try:
        opened.disk.faults.slow_disk(DELAY_S * 1000)
        opened.disk.persist(write(1))
        assert opened.synced == []  # the append did not wait for a sync

        async def one_worker_sync() -> None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(None, opened.disk.timed_sync)
            opened.disk.syncing = True
            future.add_done_callback(opened.disk.sync_done)
            await future
            await asyncio.sleep(0)  # the done callback runs on the loop

        asyncio.run(one_worker_sync())
        assert not opened.disk.syncing
        [line] = opened.slow_lines()
        assert "what=everysec" in line and "fsync=everysec" in line
        assert opened.disk.log.unsynced_bytes == 0
    finally:
        opened.disk.close()


def admin(has_disk: bool) -> tuple[AdminServer, Faults]:
    faults = Faults()

    def status() -> AdminStatusReply:
        raise AssertionError("not asked")

    logger = EventLogger("server", "s1", lambda: 1, stream=io.StringIO())
    return AdminServer(faults, status, logger, has_disk=has_disk), faults


def test_the_admin_port_slows_a_disk_and_heal_restores_it() -> None:
    server, faults = admin(has_disk=True)
    assert isinstance(server.handle(SlowDisk(250.0)), AdminOk)
    assert faults.disk_delay_s == pytest.approx(0.25)
    assert fault_state(faults).disk_delay_ms == pytest.approx(250.0)
    assert not faults.active  # the network's fast path is untouched
    assert isinstance(server.handle(Heal()), AdminOk)
    assert faults.disk_delay_s == 0.0


@pytest.mark.parametrize("delay_ms", [-1.0, 60_001.0, float("inf"), float("nan")])
def test_the_admin_port_refuses_an_impossible_delay(delay_ms: float) -> None:
    server, faults = admin(has_disk=True)
    reply = server.handle(SlowDisk(delay_ms))
    assert isinstance(reply, AdminError) and "delay_ms" in reply.reason
    assert faults.disk_delay_s == 0.0


def test_a_process_without_a_data_directory_refuses_a_slow_disk() -> None:
    server, faults = admin(has_disk=False)
    reply = server.handle(SlowDisk(100.0))
    assert isinstance(reply, AdminError) and "no data directory" in reply.reason
    assert faults.disk_delay_s == 0.0
