"""DurableLog while running: round trips, fsync policies, rotation, the lock, disk failures."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from pbkv.storage import DurableLog, FsyncPolicy, StorageError, StorageLocked, files
from tests.storage.helpers import (
    counting,
    inode,
    recording,
    recovered_after_close,
    reopen,
    segments,
    write_log,
)


def test_round_trip_of_batches_across_reopens(tmp_path: Path) -> None:
    write_log(tmp_path, [[b"a", b"b"], [b""], [b"c" * 1000]])
    write_log(tmp_path, [[b"d"]])
    recovered = recovered_after_close(tmp_path)
    assert recovered.snapshot is None
    assert recovered.records == [b"a", b"b", b"", b"c" * 1000, b"d"]
    assert recovered.truncated_bytes == 0
    assert recovered.events == ()


def test_empty_directory_is_created_and_recovers_nothing(tmp_path: Path) -> None:
    recovered = recovered_after_close(tmp_path / "new" / "dir")
    assert (recovered.snapshot, recovered.records) == (None, [])
    assert "records=0" in recovered.summary()


def test_segments_rotate_at_the_size_limit_and_replay_in_order(tmp_path: Path) -> None:
    batches = [[f"record-{index}".encode()] * 3 for index in range(50)]
    write_log(tmp_path, batches, segment_bytes_max=256)
    assert len(segments(tmp_path)) > 5
    assert all(path.stat().st_size <= 256 for path in segments(tmp_path))
    recovered = recovered_after_close(tmp_path)
    assert recovered.records == [record for batch in batches for record in batch]


def test_a_batch_over_write_bytes_max_is_split_and_recovered_whole(tmp_path: Path) -> None:
    batch = [bytes([index]) * 100 for index in range(20)]
    with counting("write") as writes:
        write_log(tmp_path, [batch], write_bytes_max=512)
    assert len(writes) >= 4
    assert recovered_after_close(tmp_path).records == batch


def test_a_record_over_write_bytes_max_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    log, _ = reopen(tmp_path, write_bytes_max=1000)
    log.append([b"fits" * 247])  # 988 bytes + 12 of header
    with pytest.raises(ValueError, match="a record of 989 bytes is over write_bytes_max"):
        log.append([b"small", b"x" * 989])
    log.close()
    assert recovered_after_close(tmp_path).records == [b"fits" * 247]


def test_always_fsyncs_once_per_append_call_whatever_the_batch_size(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path, "always")
    with counting("fdatasync") as data_syncs, counting("fsync") as syncs:
        for size in (1, 16, 64, 1, 200):
            log.append([b"x" * 100] * size)
        log.append([])  # nothing to write: nothing to sync
    assert len(data_syncs) == 5
    assert syncs == []
    assert log.syncs_total == 5
    assert log.unsynced_bytes == 0
    log.close()


def test_always_skips_the_fsync_of_a_batch_that_asks_for_none(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path, "always")
    with counting("fdatasync") as data_syncs:
        log.append([b"read-only batch"], sync=False)
        assert (len(data_syncs), log.unsynced_bytes > 0) == (0, True)
        log.append([b"write"])
    assert len(data_syncs) == 1
    assert log.unsynced_bytes == 0
    log.close()


def test_everysec_fsyncs_at_most_once_per_second(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path, "everysec")
    with counting("fdatasync") as data_syncs:
        for step in range(41):  # 0.0 .. 4.0 s in steps of 0.1 s
            log.append([b"y" * 100] * 16)
            assert log.unsynced_bytes > 0 or step % 10 == 0
            log.sync_if_due(step / 10)
    assert len(data_syncs) == 5  # at 0, 1, 2, 3 and 4 s
    assert log.last_sync_s == 4.0
    with counting("fdatasync") as data_syncs:
        log.append([b"late"])
        log.sync_if_due(4.5)  # not due yet
        log.sync_if_due(100.0)
        log.sync_if_due(101.0)  # nothing unsynced: no fsync
    assert len(data_syncs) == 1
    log.close()


def test_no_policy_never_fsyncs_appends(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path, "no")
    with counting("fdatasync") as data_syncs, counting("fsync") as syncs:
        for step in range(30):
            log.append([b"z" * 100] * 16)
            log.sync_if_due(float(step))
    assert data_syncs == syncs == []
    assert log.unsynced_bytes > 0
    log.close()  # a clean stop syncs whatever the policy
    assert recovered_after_close(tmp_path).records == [b"z" * 100] * 16 * 30


def test_unknown_fsync_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="always, everysec, no"):
        DurableLog.open(tmp_path, "sometimes")  # type: ignore[arg-type]


def test_a_second_opener_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path)
    with pytest.raises(StorageLocked, match="in use by another process") as caught:
        reopen(tmp_path)
    assert "\n" not in str(caught.value)
    log.close()
    again, _ = reopen(tmp_path)
    again.close()


def test_a_closed_log_refuses_calls(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path)
    log.close()
    log.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        log.append([b"late"])


def fail_after(real: Any, code: int, allowed_bytes: int) -> Any:
    """An os.write that writes ``allowed_bytes`` in total, then fails with ``code``."""
    budget = [allowed_bytes]

    def write(fd: int, data: Any) -> int:
        if budget[0] <= 0:
            raise OSError(code, os.strerror(code))
        written: int = real(fd, bytes(data)[: budget[0]])
        budget[0] -= written
        return written

    return write


def test_full_disk_mid_batch_keeps_earlier_data_and_no_part_of_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = reopen(tmp_path)
    log.append([b"before-1", b"before-2"])
    size = segments(tmp_path)[-1].stat().st_size
    monkeypatch.setattr(os, "write", fail_after(os.write, errno.ENOSPC, 50))
    with pytest.raises(StorageError) as caught:
        log.append([b"lost" * 20] * 5)
    message = str(caught.value)
    assert "ENOSPC" in message and "wal-" in message and "\n" not in message
    assert segments(tmp_path)[-1].stat().st_size == size
    monkeypatch.undo()  # space freed: the log goes on
    log.append([b"after"])
    log.close()
    recovered = recovered_after_close(tmp_path)
    assert recovered.records == [b"before-1", b"before-2", b"after"]
    assert recovered.truncated_bytes == 0


def test_failed_fsync_poisons_the_log_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = reopen(tmp_path)
    log.append([b"kept"])

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(StorageError, match="EIO"):
        log.append([b"maybe"])
    monkeypatch.undo()
    with pytest.raises(StorageError, match="must be reopened"):
        log.append([b"refused"])
    assert log.failed is not None
    log.close()
    assert recovered_after_close(tmp_path).records[0] == b"kept"


def test_read_only_file_system_gives_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(StorageError) as caught:
        reopen(tmp_path / "data")
    message = str(caught.value)
    assert "EROFS" in message and str(tmp_path / "data") in message and "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_gives_one_clear_line(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="EACCES"):
            reopen(tmp_path / "data")
    finally:
        tmp_path.chmod(0o700)


def test_figures_for_metrics(tmp_path: Path) -> None:
    log, _ = reopen(tmp_path, "everysec", segment_bytes_max=200)
    assert (log.segment_count, log.snapshot_count, log.segment_seq) == (1, 0, 1)
    for _ in range(10):
        log.append([b"m" * 50])
    assert log.segment_count > 1
    assert log.bytes_on_disk == sum(path.stat().st_size for path in segments(tmp_path))
    assert log.fsync_policy == "everysec"
    assert log.directory == tmp_path
    log.close()


def test_a_full_segment_is_fsynced_before_the_next_exists_whatever_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = reopen(tmp_path, "no", segment_bytes_max=200)
    events: list[str] = []
    real_sync, real_replace = os.fdatasync, os.replace

    def sync(fd: int) -> None:
        events.append("sync")
        real_sync(fd)

    def replace(source: Any, target: Any) -> None:
        events.append(f"create {Path(target).name}")
        real_replace(source, target)

    monkeypatch.setattr(os, "fdatasync", sync)
    monkeypatch.setattr(os, "replace", replace)
    for _ in range(10):
        log.append([b"q" * 50])
    monkeypatch.undo()
    created = [index for index, event in enumerate(events) if event.startswith("create wal-")]
    assert len(created) == log.segment_seq - 1 >= 3
    assert all(events[index - 1] == "sync" for index in created)
    assert events.count("sync") == len(created)  # and no other fsync under "no"
    log.close()


def test_full_disk_when_starting_a_new_segment_keeps_everything_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = reopen(tmp_path, segment_bytes_max=120)
    log.append([b"a" * 50])
    real_atomic_write = files.atomic_write

    def full_disk(path: Path, *chunks: bytes) -> None:
        raise StorageError(f"cannot write to {path}: No space left on device (ENOSPC)")

    monkeypatch.setattr(files, "atomic_write", full_disk)
    with pytest.raises(StorageError, match="ENOSPC"):
        log.append([b"b" * 50, b"c" * 50])  # needs a new segment
    monkeypatch.setattr(files, "atomic_write", real_atomic_write)
    log.append([b"d" * 50])
    log.close()
    assert recovered_after_close(tmp_path).records == [b"a" * 50, b"d" * 50]


def test_close_fsyncs_what_the_policy_left_unsynced(tmp_path: Path) -> None:
    """A clean stop loses nothing whatever the policy (design.md, "Fsync policies"): close()
    fsyncs the current segment when appends are unsynced."""
    policies: tuple[FsyncPolicy, ...] = ("no", "everysec")
    for policy in policies:
        log, _ = reopen(tmp_path / policy, policy)
        log.append([b"unsynced"])
        with recording() as events:
            log.close()
        assert events == [("fdatasync", inode(segments(tmp_path / policy)[-1]))], policy


def test_opening_fsyncs_the_segment_it_continues(tmp_path: Path) -> None:
    """A process killed without a power cut leaves its unsynced appends in the page cache,
    where recovery reads them and the next process answers from them (D1): so opening a log
    fsyncs the segment it continues before it returns (it cannot know what was synced)."""
    write_log(tmp_path, [[b"a"], [b"b"]])
    (segment,) = segments(tmp_path)
    with recording() as events:
        log, recovered = reopen(tmp_path, "no")
    log.close()
    assert recovered.records == [b"a", b"b"]
    assert ("fdatasync", inode(segment)) in events


def test_a_new_file_is_fsynced_renamed_then_its_directory_fsynced(tmp_path: Path) -> None:
    """Segments, snapshots and the REPAIRED mark are created atomically and durably
    (design.md, "On disk"): the data is fsynced before the rename and the directory after it,
    or a power cut could leave the name without its data, or no name at all."""
    target = tmp_path / "snap-0000000001.snap"
    with recording() as events:
        files.atomic_write(target, b"header", b"payload")
    assert target.read_bytes() == b"headerpayload"
    assert events == [
        ("fsync", inode(target)),  # the temporary file, which the rename made the target
        ("replace", target.name),
        ("fsync", inode(tmp_path)),
    ]
