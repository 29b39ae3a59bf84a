"""Snapshots: compaction alongside appends, installs, retention, and a property over all ops."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbkv.storage import DurableLog, StorageError, files
from pbkv.storage.format import encode_frame
from tests.storage.helpers import (
    inode,
    recording,
    recovered_after_close,
    reopen,
    segments,
    snapshots,
)


def test_compaction_replaces_the_covered_records_by_the_snapshot(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path)
    log.append([b"a", b"b"])
    mark = log.begin_compaction()
    log.append([b"c"])
    assert log.finish_compaction(mark, b"state(a,b)")
    log.append([b"d"])
    log.close()
    recovered = recovered_after_close(tmp_path)
    assert (recovered.snapshot, recovered.records) == (b"state(a,b)", [b"c", b"d"])


def test_appends_go_on_while_a_worker_thread_writes_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = reopen(tmp_path, segment_bytes_max=400)
    log.append([b"before"])
    real_atomic_write = files.atomic_write
    appended_meanwhile = threading.Event()

    def slow_snapshot_write(path: Path, *data: bytes) -> None:
        if path.name.startswith("snap-"):  # hold the snapshot until the main thread appended
            assert appended_meanwhile.wait(timeout=10), "append was blocked by the compaction"
        real_atomic_write(path, *data)

    monkeypatch.setattr(files, "atomic_write", slow_snapshot_write)
    mark = log.begin_compaction()
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(log.finish_compaction(mark, b"S")))
    worker.start()
    during = [f"during-{index}".encode() for index in range(200)]
    for record in during:
        log.append([record])  # rotates segments too, while the snapshot is pending
    appended_meanwhile.set()
    worker.join(timeout=10)
    assert results == [True]
    log.close()
    recovered = recovered_after_close(tmp_path)
    assert (recovered.snapshot, recovered.records) == (b"S", during)


def test_many_compactions_from_a_thread_lose_no_record(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path, "everysec", segment_bytes_max=300)
    appended: list[bytes] = []
    for round_number in range(5):
        mark = log.begin_compaction()
        blob = b"|".join(appended)  # the state as of the mark, serialized "in a thread"
        worker = threading.Thread(target=log.finish_compaction, args=(mark, blob))
        worker.start()
        for index in range(40):
            record = f"{round_number}-{index}".encode()
            log.append([record])
            appended.append(record)
        worker.join(timeout=10)
    log.close()
    recovered = recovered_after_close(tmp_path)
    assert recovered.snapshot is not None
    assert recovered.snapshot.split(b"|") + recovered.records == appended


def test_retention_keeps_two_snapshots_and_the_segments_since_the_older(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path, segment_bytes_max=120)
    for round_number in range(6):
        for index in range(5):
            log.append([f"{round_number}-{index}".encode() * 4])
        log.finish_compaction(log.begin_compaction(), f"snap-{round_number}".encode())
    older, _ = snapshots(tmp_path)
    older_seq = int(older.name[5:15])
    assert min(int(path.name[4:14]) for path in segments(tmp_path)) == older_seq
    assert (log.snapshot_count, log.segment_count) == (2, len(segments(tmp_path)))
    log.close()
    assert recovered_after_close(tmp_path).snapshot == b"snap-5"


def test_the_files_retention_drops_stay_dropped_after_a_power_cut(tmp_path: Path) -> None:
    """Retention's deletions are made durable: the directory is fsynced after the last one
    (files.py), so a power cut never brings back files that recovery no longer expects."""
    log, _ = reopen(tmp_path, segment_bytes_max=120)
    for round_number in range(2):
        log.append([f"{round_number}".encode() * 50])
        log.finish_compaction(log.begin_compaction(), f"snap-{round_number}".encode())
    log.append([b"last"])
    before = {path.name for path in tmp_path.iterdir()}
    with recording() as events:
        log.finish_compaction(log.begin_compaction(), b"snap-2")
    log.close()
    dropped = before - {path.name for path in tmp_path.iterdir()}
    deleted = [index for index, event in enumerate(events) if event[0] == "unlink"]
    assert {events[index][1] for index in deleted} == dropped and dropped
    assert ("fsync", inode(tmp_path)) in events[deleted[-1] + 1 :]


def test_install_snapshot_replaces_everything(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path, segment_bytes_max=120)
    for index in range(10):
        log.append([f"old-{index}".encode() * 5])
    log.finish_compaction(log.begin_compaction(), b"old state")
    log.append([b"old tail"])
    log.install_snapshot(b"transferred state")
    log.append([b"new"])
    assert (log.snapshot_count, log.segment_count) == (1, 1)
    log.close()
    assert len(snapshots(tmp_path)) == len(segments(tmp_path)) == 1
    recovered = recovered_after_close(tmp_path)
    assert (recovered.snapshot, recovered.records) == (b"transferred state", [b"new"])


def test_a_crash_before_an_installed_snapshots_segment_replays_nothing_it_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed snapshot is numbered past every segment, so a process that dies between
    writing it and creating its segment leaves no segment of the replaced history at or above
    it: recovery replays none of those records on top of the transferred state (D1, P4)."""
    log, _ = reopen(tmp_path)
    log.append([b"old-1"])
    log.append([b"old-2"])
    real_atomic_write = files.atomic_write

    def crash_before_the_segment(path: Path, *data: bytes) -> None:
        if path.name.startswith("wal-"):
            raise StorageError(f"cannot write to {path}: killed")
        real_atomic_write(path, *data)

    monkeypatch.setattr(files, "atomic_write", crash_before_the_segment)
    with pytest.raises(StorageError, match="killed"):
        log.install_snapshot(b"transferred state")
    monkeypatch.undo()
    log.close()
    recovered = recovered_after_close(tmp_path)
    assert (recovered.snapshot, recovered.records) == (b"transferred state", [])


def test_a_compaction_overtaken_by_an_install_writes_nothing(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path)
    log.append([b"a"])
    mark = log.begin_compaction()
    log.install_snapshot(b"installed")
    assert not log.finish_compaction(mark, b"stale state")
    assert not log.finish_compaction(log.begin_compaction(), b"nothing new to cover")
    log.close()
    assert recovered_after_close(tmp_path).snapshot == b"installed"


def test_failed_snapshot_write_leaves_the_log_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = reopen(tmp_path)
    log.append([b"a"])
    mark = log.begin_compaction()

    def full_disk(path: Path, *data: bytes) -> None:
        raise StorageError(f"cannot write to {path}: No space left on device (ENOSPC)")

    monkeypatch.setattr(files, "atomic_write", full_disk)
    with pytest.raises(StorageError, match="ENOSPC"):
        log.finish_compaction(mark, b"S")
    monkeypatch.undo()
    log.append([b"b"])
    log.close()
    recovered = recovered_after_close(tmp_path)
    assert (recovered.snapshot, recovered.records) == (None, [b"a", b"b"])


class Model:
    """What a reopen must return: the last snapshot and every record after it."""

    def __init__(self) -> None:
        self.snapshot: bytes | None = None
        self.records: list[bytes] = []
        self.pending: tuple[Any, bytes, int] | None = None  # mark, blob, records covered
        self.last_batch: list[bytes] | None = None  # the log's last bytes are this batch
        self.counter = 0

    def blob(self, prefix: str) -> bytes:
        self.counter += 1
        return f"{prefix}-{self.counter}".encode()


def apply(log: DurableLog, model: Model, operation: tuple[str, int]) -> DurableLog:
    kind, size = operation
    last_batch, model.last_batch = model.last_batch, None
    if kind == "append":
        batch = [model.blob("r") * size for _ in range(size % 5 + 1)]
        log.append(batch)
        model.records += batch
        model.last_batch = batch
    elif kind == "begin" and model.pending is None:
        model.pending = (log.begin_compaction(), model.blob("snap"), len(model.records))
    elif kind == "finish" and model.pending is not None:
        mark, blob, covered = model.pending
        model.pending = None
        if log.finish_compaction(mark, blob):
            model.snapshot, model.records = blob, model.records[covered:]
    elif kind == "install":
        model.snapshot, model.records, model.pending = model.blob("install"), [], None
        log.install_snapshot(model.snapshot)
    elif kind == "reopen":
        log = reopen_and_check(log, model, torn_bytes=0)
    elif kind == "tear" and last_batch is not None:
        log = tear_last_batch(log, model, last_batch, size)
    return log


def reopen_and_check(log: DurableLog, model: Model, torn_bytes: int) -> DurableLog:
    log.close()
    log, recovered = DurableLog.open(log.directory, "no", segment_bytes_max=160)
    assert (recovered.snapshot, recovered.records) == (model.snapshot, model.records)
    assert recovered.truncated_bytes == torn_bytes
    model.pending = None
    return log


def tear_last_batch(log: DurableLog, model: Model, batch: list[bytes], size: int) -> DurableLog:
    """A crash in the middle of the last append: cut 1..all of its frame off the segment."""
    log.close()
    frame_bytes = len(encode_frame(batch))
    cut = max(1, size * frame_bytes // 12)
    segment = max(Path(log.directory).glob("wal-*.log"))
    segment.write_bytes(segment.read_bytes()[:-cut])
    del model.records[len(model.records) - len(batch) :]
    return reopen_and_check(log, model, torn_bytes=frame_bytes - cut)


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["append", "append", "begin", "finish", "install", "reopen", "tear"]),
        st.integers(min_value=1, max_value=12),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS)
def test_any_sequence_of_operations_reopens_to_the_expected_state(
    operations: list[tuple[str, int]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        model = Model()
        log, _ = DurableLog.open(directory, "no", segment_bytes_max=160)
        for operation in operations:
            log = apply(log, model, operation)
        log = apply(log, model, ("reopen", 0))
        log.close()


def test_sync_from_a_worker_thread_while_appending_and_rotating(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path, "everysec", segment_bytes_max=300)
    stop = threading.Event()

    def syncer() -> None:
        while not stop.is_set():
            log.sync()

    worker = threading.Thread(target=syncer)
    worker.start()
    records = [f"record-{index}".encode() for index in range(300)]
    for record in records:
        log.append([record])
    stop.set()
    worker.join(timeout=10)
    log.sync()
    assert log.unsynced_bytes == 0
    assert log.syncs_total > 1
    log.close()
    assert recovered_after_close(tmp_path).records == records
