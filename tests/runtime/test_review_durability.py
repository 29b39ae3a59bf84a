"""Durability findings of the review at the level of a server's disk and the view service's
directory: a repaired disk no longer vouches for the views it recorded (V12), a saved view the
core would refuse is a corrupt file, and the error lines name the right file and holder."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import msgspec
import pytest

from pbkv.core.durable import RecoveredState, Snapshot, StreamRecord, ViewRecord
from pbkv.core.effects import Persist, PersistView
from pbkv.core.kv_store import Limits
from pbkv.core.messages import Put, Request, View
from pbkv.runtime.config import ConfigError
from pbkv.runtime.disk import ReplicaDisk, StorageOptions
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.persist import VIEW_FILE, ViewStore
from pbkv.storage import DurableLog, StorageCorrupt


def open_disk(path: Path, *, repair: bool = False) -> tuple[ReplicaDisk, RecoveredState, str]:
    """The disk, its recovered state (not empty here) and the lines it logged."""
    stream = io.StringIO()
    logger = EventLogger("server", "s3", lambda: 0, stream=stream)
    disk, state = ReplicaDisk.open(StorageOptions(str(path), repair=repair), Limits(), logger)
    assert state is not None
    return disk, state, stream.getvalue()


def put(index: int, view: int) -> Persist:
    request = Request("client", index, 0, Put(f"k{index}", "v"))
    return Persist((StreamRecord(index, view, request),), sync=True)


def primary_of_view_2(path: Path, writes: int = 20) -> None:
    """A primary that entered view 2 with its state and acknowledged ``writes`` writes."""
    disk, _ = ReplicaDisk.open(StorageOptions(str(path)), Limits(), EventLogger("s", "s", int))
    disk.persist(Persist((ViewRecord(2),), sync=True))
    for index in range(writes):
        disk.persist(put(index, 2))
    disk.close()


def flip_in_the_writes(path: Path) -> None:
    (segment,) = sorted(path.glob("wal-*.log"))
    data = bytearray(segment.read_bytes())
    data[len(data) * 3 // 4] ^= 0x5A  # in the writes, past the view record
    segment.write_bytes(bytes(data))


def line_of(log: str, event: str) -> str:
    return next(line for line in log.splitlines() if f" {event} " in line)


def torn_tail_keeps_the_durable_view(path: Path) -> None:
    primary_of_view_2(path)
    (segment,) = sorted(path.glob("wal-*.log"))
    segment.write_bytes(segment.read_bytes()[:-3])  # the crash cut the last, unanswered write
    disk, state, log = open_disk(path)
    disk.close()
    assert (state.durable_view, state.next_index) == (2, 19)
    assert "note=" not in line_of(log, "storage_recovered")
    assert not (path / "REPAIRED").exists()


def test_a_repaired_disk_reports_no_durable_view_until_it_records_a_newer_one(
    tmp_path: Path,
) -> None:
    torn_tail_keeps_the_durable_view(tmp_path / "torn")  # the normal crash: nothing lost
    primary_of_view_2(tmp_path)
    flip_in_the_writes(tmp_path)
    disk, state, log = open_disk(tmp_path, repair=True)
    disk.close()
    assert 0 < state.next_index < 20  # acknowledged writes of view 2 are gone
    assert state.durable_view == 0  # so it must not be preferred after an outage (V12)
    recovered = line_of(log, "storage_recovered")
    assert " durable_view=0 " in recovered and "history=incomplete" in recovered
    assert "a repair lost records that may have been acknowledged" in recovered
    assert "marked " in line_of(log, "storage_repaired")
    disk, state, log = open_disk(tmp_path)  # an ordinary restart still distrusts it
    assert state.durable_view == 0
    assert "a view after 2 is recorded" in line_of(log, "storage_recovered")
    disk.persist(Persist((ViewRecord(3),), sync=True))  # a backup complete for view 3
    disk.close()
    disk, state, log = open_disk(tmp_path)
    disk.close()
    assert state.durable_view == 3
    assert "REPAIRED removed" in line_of(log, "storage_note")
    assert "note=" not in line_of(log, "storage_recovered")
    assert not (tmp_path / "REPAIRED").exists()


def test_a_deleted_last_segment_is_refused_and_repaired_without_a_durable_view(
    tmp_path: Path,
) -> None:
    primary_of_view_2(tmp_path, writes=2)
    disk, _, _ = open_disk(tmp_path)
    mark = disk.log.begin_compaction()
    snapshot = Snapshot({"k0": "v", "k1": "v"}, (), 2, 2, 2, Limits())
    assert disk.log.finish_compaction(mark, msgspec.msgpack.encode(snapshot))
    disk.persist(put(2, 2))
    disk.close()
    last = sorted(tmp_path.glob("wal-*.log"))[-1]
    last.unlink()
    with pytest.raises(StorageCorrupt) as caught:
        open_disk(tmp_path)
    assert str(caught.value).startswith(f"corrupt log {last} at offset 0: segment is missing")
    disk, state, log = open_disk(tmp_path, repair=True)
    disk.close()
    assert (state.next_index, state.durable_view) == (2, 0)
    assert "a repair lost records" in line_of(log, "storage_recovered")


def save_view(directory: Path, number: int) -> None:
    record = {"version": 1, "number": number, "primary": "127.0.0.1:1", "backups": []}
    record |= {"acknowledged": True}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / VIEW_FILE).write_bytes(msgspec.json.encode(record))


def test_a_saved_view_number_the_core_refuses_in_pings_is_a_corrupt_file(tmp_path: Path) -> None:
    save_view(tmp_path, 2**62 - 1)
    store = ViewStore(tmp_path)
    restored = store.load()
    store.close()
    assert restored is not None and restored.view.number == 2**62 - 1
    save_view(tmp_path, 2**62)  # the service would never serve: every ping 'malformed'
    store = ViewStore(tmp_path)
    with pytest.raises(ConfigError) as caught:
        store.load()
    store.close()
    assert str(caught.value) == (
        f"corrupt view file {str(tmp_path / VIEW_FILE)!r}: view number {2**62} outside 0..2**62-1"
    )


def test_a_view_service_on_a_servers_directory_names_a_pbkv_process(tmp_path: Path) -> None:
    log, _ = DurableLog.open(tmp_path, "always")  # a server's disk, held
    try:
        with pytest.raises(ConfigError) as caught:
            ViewStore(tmp_path)
    finally:
        log.close()
    message = str(caught.value)
    assert message == (
        f"data directory {str(tmp_path)!r} is in use by another pbkv process, a server "
        "(its log is there; lock LOCK held)"
    )


def test_a_failed_save_names_the_temporary_file_it_could_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ViewStore(tmp_path)
    state = PersistView(View(1, "127.0.0.1:1", ()), acknowledged=False)

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as caught:
        store.save(state)
    store.close()
    assert caught.value.filename == str(tmp_path / "view.tmp")  # the host's persist_failed path
    assert not (tmp_path / "view.tmp").exists()
    assert not (tmp_path / VIEW_FILE).exists()
