"""Which process each fault command sends which order to, and its exit code when one does not
answer, without processes: the admin ports and the view service are stand-ins
(``monkeypatch``) that record what reached them. The words printed are test_fault_notes.py's;
here a swapped direction, a process cut from itself or a dead process asked to heal (all
mutants every suite passed) fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbkv.cluster import faults, processes, targets
from pbkv.cluster.state import ClusterState, Kind, ProcessRecord, save_state
from pbkv.core.messages import View
from pbkv.runtime.admin import AdminRequest, Heal, Partition, SlowDisk, Unreliable
from tests.cluster.inprocess import run_main

VS, PRIMARY, BACKUP, IDLE = "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"
NAMES = ("viewserver", "s1", "s2", "s3")
ADMIN = {name: f"127.0.0.1:{7100 + index}" for index, name in enumerate(NAMES)}
PIDS = {name: 90_000 + index for index, name in enumerate(NAMES)}
KINDS: dict[str, Kind] = {
    name: "viewserver" if name == "viewserver" else "server" for name in NAMES
}


class Cluster:
    """The recorded cluster, the state of each process, and the orders its admin ports took."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.states = dict.fromkeys(NAMES, "alive")
        self.sent: list[tuple[str, AdminRequest]] = []

    def state_of(self, pid: int, argv: object = None) -> str:
        return self.states[next(name for name, known in PIDS.items() if known == pid)]

    def send_admin(self, address: str, message: AdminRequest, timeout_s: float) -> None:
        name = next(name for name, admin in ADMIN.items() if admin == address)
        if self.states[name] == "dead":
            raise ConnectionRefusedError(111, "Connection refused")
        if self.states[name] == "paused":
            raise TimeoutError("timed out")
        self.sent.append((name, message))


def _record(name: str) -> ProcessRecord:
    address = dict(zip(NAMES, (VS, PRIMARY, BACKUP, IDLE), strict=True))[name]
    kind: Kind = "viewserver" if name == "viewserver" else "server"
    admin_port = int(ADMIN[name].rsplit(":", 1)[1])
    return ProcessRecord(
        name, kind, "idle", address, PIDS[name], admin_port, 0, "log", (name,), 0.0
    )


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """View 2: s1 primary, s2 backup, s3 idle."""
    records = tuple(_record(name) for name in NAMES)
    save_state(ClusterState(tmp_path, VS, 0.1, 5, 7000, 0.0, records))
    fake = Cluster(tmp_path)
    monkeypatch.setattr(
        targets, "get_view", lambda address, timeout_s=1.0: View(2, PRIMARY, (BACKUP,))
    )
    monkeypatch.setattr(faults, "send_admin", fake.send_admin)
    monkeypatch.setattr(processes, "process_state", fake.state_of)
    return fake


def _run(
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, str]:
    code, _, err = run_main(monkeypatch, capsys, cluster.directory, "cluster", *args, "--dir", ".")
    return code, err


def test_a_partition_tells_both_ends_each_the_others_address(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(cluster, monkeypatch, capsys, "partition", "primary", "s2") == (0, "")
    assert cluster.sent == [
        ("s1", Partition((BACKUP,), "both")),
        ("s2", Partition((PRIMARY,), "both")),
    ]


def test_a_one_way_cut_drops_what_a_sends_to_b_and_nothing_b_sends(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(cluster, monkeypatch, capsys, "partition", "s2", "s1", "--one-way") == (0, "")
    assert cluster.sent == [
        ("s2", Partition((PRIMARY,), "out")),  # s2 drops what it sends to s1
        ("s1", Partition((BACKUP,), "in")),  # and s1 what it receives from s2
    ]


def test_a_process_cannot_be_partitioned_from_itself(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(cluster, monkeypatch, capsys, "partition", "s1", "primary")
    assert (code, err) == (4, "pbkv: error: cannot partition s1 from itself\n")
    assert cluster.sent == []


def test_isolate_cuts_the_target_from_the_others_and_asks_no_dead_process(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.states["s3"] = "dead"
    assert _run(cluster, monkeypatch, capsys, "isolate", "backup") == (0, "")
    assert cluster.sent == [
        ("s2", Partition((VS, PRIMARY, IDLE), "both")),
        ("viewserver", Partition((BACKUP,), "both")),
        ("s1", Partition((BACKUP,), "both")),
    ]


def test_heal_skips_the_dead_and_names_a_paused_process_that_did_not_answer(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.states["s3"] = "dead"
    assert _run(cluster, monkeypatch, capsys, "heal") == (0, "")
    assert cluster.sent == [("viewserver", Heal()), ("s1", Heal()), ("s2", Heal())]
    cluster.sent.clear()
    cluster.states["s2"] = "paused"
    code, err = _run(cluster, monkeypatch, capsys, "heal")
    assert (code, err) == (
        3,  # unavailable: the paused one may take it once resumed; the others did
        "pbkv: error: s2 did not answer (paused) (done: viewserver: heal; s1: heal)\n",
    )
    assert cluster.sent == [("viewserver", Heal()), ("s1", Heal())]


def test_unreliable_takes_a_drop_of_1_and_all_means_every_running_process(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(cluster, monkeypatch, capsys, "unreliable", "s1", "--drop", "1") == (0, "")
    assert cluster.sent == [("s1", Unreliable(1.0, 0.0, None))]
    cluster.sent.clear()
    cluster.states["s3"] = "dead"  # killed earlier in the lab: it sends nothing to drop
    assert _run(cluster, monkeypatch, capsys, "unreliable", "all", "--drop", "0.5") == (0, "")
    assert cluster.sent == [(name, Unreliable(0.5, 0.0, None)) for name in NAMES[:3]]


def test_slow_disk_of_all_is_every_running_server(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.states["s3"] = "dead"
    assert _run(cluster, monkeypatch, capsys, "slow-disk", "all", "--ms", "5") == (0, "")
    assert cluster.sent == [("s1", SlowDisk(5.0)), ("s2", SlowDisk(5.0))]
