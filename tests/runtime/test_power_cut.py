"""Issue #10 with real processes: every process of a durable cluster killed at once (kill -9,
view service included) under load comes back with every acknowledged write, once, and the
history is linearizable; the same with a torn record at the end of each log; a log damaged in
the middle refuses to start with one line (and ``--repair`` starts from the valid prefix)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from pbkv.cluster import data_dirs, manager
from pbkv.cluster.rpc import dump_all, get_view
from pbkv.cluster.state import ClusterState
from pbkv.core.durable import StreamRecord
from pbkv.core.messages import Put, Request, View
from pbkv.demo.verify import acknowledged_present, linearizable, nothing_applied_twice
from pbkv.demo.workload import Workload
from pbkv.storage import DurableLog
from pbkv.storage.format import SEGMENT_HEADER_BYTES
from tests.cluster.helpers import kill_leftovers

pytestmark = pytest.mark.integration
LOAD_S = 1.5


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[ClusterState]:
    directory = tmp_path / "cluster"
    config = manager.ClusterConfig(
        directory=directory, servers=2, base_port=0, ping_interval_s=0.05, fsync="always"
    )
    state = manager.up(config)
    try:
        yield state
    finally:
        manager.down(directory)
        assert not kill_leftovers(tmp_path)


def kill_everything(state: ClusterState) -> None:
    """kill -9 of every process in the same instant, as a power cut."""
    for record in state.processes:
        os.kill(record.pid, signal.SIGKILL)
    for record in state.processes:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/proc/{record.pid}").exists():
            try:
                os.waitpid(record.pid, os.WNOHANG)
            except ChildProcessError:
                break
            time.sleep(0.01)


def restart_everything(state: ClusterState) -> ClusterState:
    for record in state.processes:
        state, _ = manager.restart(state, record)
    return state


def wait_serving(state: ClusterState, timeout_s: float = 20.0) -> View:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            view = get_view(state.viewserver)
            if view.primary is not None and view.backup is not None:
                _, data = dump_all(view.primary)
                _, copy = dump_all(view.backup)
                if data == copy:
                    return view
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError("the restarted cluster did not serve with a synced backup")


def power_cut(state: ClusterState, damage: object = None) -> tuple[ClusterState, Workload]:
    load = Workload(state.viewserver, clients=4, pause_s=0.002, timeout_s=15.0, seed=7)
    load.start()
    time.sleep(LOAD_S)
    kill_everything(state)
    if callable(damage):
        damage(state)
    return restart_everything(state), load


def check_nothing_lost(state: ClusterState, load: Workload) -> None:
    view = wait_serving(state)
    history = load.stop()
    acknowledged = [op for op in history if op.complete is not None and op.op == "append"]
    assert len(acknowledged) > 50, "the load did not get going"
    assert view.primary is not None and view.backup is not None
    _, primary = dump_all(view.primary)
    _, backup = dump_all(view.backup)
    checks = [
        acknowledged_present(primary, history, {}),
        nothing_applied_twice({"primary": primary, "backup": backup}),
        linearizable(history, budget_s=60.0),
    ]
    assert all(check.ok for check in checks), checks


def server_logs(state: ClusterState) -> str:
    return "".join(Path(r.log_file).read_text() for r in state.servers())


def test_a_cluster_killed_all_at_once_under_load_loses_no_acknowledged_write(
    durable: ClusterState,
) -> None:
    state, load = power_cut(durable)
    check_nothing_lost(state, load)
    logs = server_logs(state)
    assert "storage_recovered" in logs and "keys=0 " not in logs.split("storage_recovered")[-1]


def tear_the_tail(state: ClusterState) -> None:
    """Half a frame at the end of every server's newest segment: a write cut by the crash."""
    for record in state.servers():
        segments = sorted(data_dirs.server_data_dir(state.directory, record.name).glob("wal-*"))
        with segments[-1].open("ab") as segment:
            segment.write(b"\x00\x00\x01\x00torn-by-power-cut")


def test_a_torn_record_at_the_end_of_every_log_is_cut_and_nothing_acknowledged_is_lost(
    durable: ClusterState,
) -> None:
    state, load = power_cut(durable, tear_the_tail)
    check_nothing_lost(state, load)
    assert server_logs(state).count("truncated_bytes=21") >= 2


def test_a_log_damaged_in_the_middle_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "s1"
    log, _ = DurableLog.open(data, "always")
    records = [StreamRecord(i, 1, Request("c", i, i, Put("k", "v" * 40))) for i in range(3)]
    for record in records:
        log.append([msgspec.msgpack.encode(record)])
    log.close()
    [segment] = sorted(data.glob("wal-*"))
    damaged = bytearray(segment.read_bytes())
    offset = len(damaged) - 2 * (len(damaged) - SEGMENT_HEADER_BYTES) // 3  # the second frame
    damaged[offset + 20] ^= 0xFF  # valid frames follow: not a torn tail
    segment.write_bytes(bytes(damaged))
    argv = [sys.executable, "-m", "pbkv", "server", "--listen", "127.0.0.1:0"]
    argv += ["--viewserver", "127.0.0.1:1", "--data-dir", str(data)]
    refused = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 5
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert f"corrupt log {segment} at offset {offset}" in lines[0] and "--repair" in lines[0]
    repaired = subprocess.Popen([*argv, "--repair"], stderr=subprocess.PIPE, text=True)
    try:
        assert repaired.stderr is not None
        line = repaired.stderr.readline()
        while "storage_recovered" not in line:
            line = repaired.stderr.readline()
        assert "keys=1 position=1 " in line  # the valid prefix: the first record
    finally:
        repaired.kill()
        repaired.wait()
