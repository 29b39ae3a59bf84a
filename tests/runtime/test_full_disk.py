"""A full disk under a real durable cluster (issue #10's adversary): the server whose data
directory fills stops with one line and exit status 70 (D1: nothing it could not write is
acknowledged), the view service replaces it, and every write acknowledged before, during and
after is on the new primary and its backup.

The full disk is a real one: a 2 MiB tmpfs mounted on the server's data directory (root and
``mount`` needed; skipped otherwise, e.g. in an unprivileged container).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbkv.client import Client
from pbkv.cluster import data_dirs, manager
from pbkv.cluster.rpc import dump_all, get_view
from pbkv.cluster.state import ClusterState
from pbkv.core.messages import View
from pbkv.errors import PbkvError
from tests.cluster.helpers import kill_leftovers

pytestmark = pytest.mark.integration
DISK_BYTES = 2 * 1024 * 1024
VALUE = "v" * 32 * 1024  # 64 of these fill the disk
WRITES = 120


@contextlib.contextmanager
def tiny_disk(path: Path) -> Iterator[None]:
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def wait_for_view(state: ClusterState, good: object, timeout_s: float = 20.0) -> View:
    deadline = time.monotonic() + timeout_s
    view = get_view(state.viewserver)
    while time.monotonic() < deadline:
        view = get_view(state.viewserver)
        if callable(good) and good(view):
            return view
        time.sleep(0.05)
    raise AssertionError(f"no such view in {timeout_s} s; last {view}")


def write_through_the_failure(state: ClusterState) -> dict[str, str]:
    """Put WRITES large values; return the acknowledged ones (a put that timed out may or may
    not have taken effect, N4)."""
    acknowledged: dict[str, str] = {}
    with Client(state.viewserver, timeout=15.0) as client:
        for index in range(WRITES):
            key, value = f"k{index:03d}", f"{index}:{VALUE}"
            with contextlib.suppress(PbkvError):
                client.put(key, value)
                acknowledged[key] = value
    return acknowledged


@pytest.mark.parametrize("victim", ["s1", "s2"], ids=["primary-disk-full", "backup-disk-full"])
def test_a_full_disk_stops_its_server_with_one_line_and_loses_no_acknowledged_write(
    tmp_path: Path, victim: str
) -> None:
    directory = tmp_path / "cluster"
    config = manager.ClusterConfig(
        directory=directory, servers=3, base_port=0, ping_interval_s=0.05, fsync="always"
    )
    with tiny_disk(data_dirs.server_data_dir(directory, victim)):
        state = manager.up(config)
        try:
            [record] = [r for r in state.processes if r.name == victim]
            view = get_view(state.viewserver)
            assert (view.primary if victim == "s1" else view.backup) == record.address
            acknowledged = write_through_the_failure(state)
            assert len(acknowledged) == WRITES, "the cluster stopped answering"
            log = Path(record.log_file).read_text()
            [failure] = [line for line in log.splitlines() if "storage_failed" in line]
            assert "No space left on device" in failure and "Traceback" not in log
            assert "exit_code=70" in log
            view = wait_for_view(
                state,
                lambda v: record.address not in v.members() and v.backup is not None,
            )
            assert view.primary is not None and view.backup is not None
            _, primary = dump_all(view.primary)
            _, backup = dump_all(view.backup)
            missing = [key for key, value in acknowledged.items() if primary.get(key) != value]
            assert not missing and primary == backup
        finally:
            manager.down(directory)
    assert not kill_leftovers(tmp_path)
