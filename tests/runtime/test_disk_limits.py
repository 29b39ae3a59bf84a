"""A data directory remembers the limits its state was built under (protocol.md D1, P5): a
server restarted with other limits refuses to start with one line, instead of replaying its log
under them and silently losing acknowledged writes (review: a smaller --value-bytes-max dropped
59 acknowledged writes and left the replicas disagreeing)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from pbkv.core.durable import DurableRecord, LimitsRecord, StreamRecord
from pbkv.core.effects import Persist
from pbkv.core.kv_store import Limits
from pbkv.core.messages import Put, Request
from pbkv.runtime.disk import ReplicaDisk, StorageOptions
from pbkv.runtime.logging import EventLogger
from pbkv.storage import DurableLog, StorageError

BIG_VALUE = "v" * 100


def open_disk(path: Path, limits: Limits) -> ReplicaDisk:
    logger = EventLogger("server", "s1", lambda: 1, stream=io.StringIO())
    disk, _ = ReplicaDisk.open(StorageOptions(str(path)), limits, logger)
    return disk


def write_one(path: Path, limits: Limits) -> None:
    disk = open_disk(path, limits)
    request = Request("c", 0, 0, Put("k", BIG_VALUE))
    disk.persist(Persist((StreamRecord(0, 1, request),), sync=True))
    disk.close()


def test_a_disk_reopened_with_other_limits_is_refused_and_with_its_own_recovers(
    tmp_path: Path,
) -> None:
    write_one(tmp_path / "data", Limits())
    with pytest.raises(StorageError, match=r"value_bytes_max 1048576 \(this server: 20\)"):
        open_disk(tmp_path / "data", Limits(value_bytes_max=20))
    logger = EventLogger("server", "s1", lambda: 1, stream=io.StringIO())
    disk, state = ReplicaDisk.open(StorageOptions(str(tmp_path / "data")), Limits(), logger)
    disk.close()
    assert state is not None and state.store.data == {"k": BIG_VALUE}


def test_a_fresh_directory_is_still_fresh_after_its_limits_were_recorded(tmp_path: Path) -> None:
    open_disk(tmp_path / "data", Limits()).close()
    logger = EventLogger("server", "s1", lambda: 1, stream=io.StringIO())
    disk, state = ReplicaDisk.open(StorageOptions(str(tmp_path / "data")), Limits(), logger)
    disk.close()
    assert state is None  # nothing but the limits: it restarts as a fresh server (P7)
    # Nothing was executed under them, so other limits are taken (and recorded) at once; a
    # directory holding state refuses them (the test below).
    other = Limits(key_bytes_max=8)
    disk, state = ReplicaDisk.open(StorageOptions(str(tmp_path / "data")), other, logger)
    disk.close()
    assert state is None
    log, recovered = DurableLog.open(str(tmp_path / "data"), "always")
    log.close()
    records = [msgspec.msgpack.decode(r, type=DurableRecord) for r in recovered.records]
    assert records[-1] == LimitsRecord(other)


def test_the_server_command_refuses_other_limits_with_one_line(tmp_path: Path) -> None:
    write_one(tmp_path / "data", Limits())
    command = [sys.executable, "-m", "pbkv", "server", "--listen", "127.0.0.1:0"]
    command += ["--viewserver", "127.0.0.1:9", "--data-dir", str(tmp_path / "data")]
    result = subprocess.run(
        [*command, "--value-bytes-max", "20"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "built under other limits" in line and "Traceback" not in result.stderr
