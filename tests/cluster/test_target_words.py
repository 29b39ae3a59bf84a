"""What a target names (``pbkv cluster kill primary``, ``logs s2``, ``logs 127.0.0.1:7001``) and
the one line when it names nothing, without processes: the view service's answer is a stand-in
(``monkeypatch``), the commands run through ``pbkv``'s entry point in this process. Each test
fails on a mutant of ``pbkv.cluster.targets`` or of ``cluster logs`` that every suite passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbkv.cluster import manager, targets
from pbkv.cluster.logs import record_cluster_event
from pbkv.cluster.rpc import NoAnswer
from pbkv.cluster.state import ClusterState, ProcessRecord, logs_dir, save_state
from pbkv.core.messages import View
from tests.cluster.inprocess import record_replicated_view_service, run_main, stub_process_actions

VS, PRIMARY, BACKUP = "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"


def _record(directory: Path, name: str, kind: str, address: str) -> ProcessRecord:
    log = logs_dir(directory) / f"{name}.log"
    return ProcessRecord(name, kind, "idle", address, 0, 0, 0, str(log), (), 0.0)  # type: ignore[arg-type]


def _line(source: str, address: str, event: str, second: int = 1) -> str:
    return f"2026-11-21T19:30:0{second}.000Z {source}={address} view=2 {event}\n"


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recorded cluster (view service, s1, s2) with a log each; nothing may be signalled."""
    records = (
        _record(tmp_path, "viewserver", "viewserver", VS),
        _record(tmp_path, "s1", "server", PRIMARY),
        _record(tmp_path, "s2", "server", BACKUP),
    )
    save_state(ClusterState(tmp_path, VS, 0.1, 5, 7000, 0.0, records))
    logs_dir(tmp_path).mkdir()
    (logs_dir(tmp_path) / "viewserver.log").write_text(_line("viewserver", VS, "view_change"))
    (logs_dir(tmp_path) / "s1.log").write_text(_line("server", PRIMARY, "role_change", 2))
    (logs_dir(tmp_path) / "s2.log").write_text(_line("server", BACKUP, "view_learned", 3))

    def no_kill(*args: object) -> str:
        raise AssertionError("nothing may be killed")

    monkeypatch.setattr(manager, "kill", no_kill)
    return tmp_path


def _view(monkeypatch: pytest.MonkeyPatch, view: View | None) -> None:
    def get_view(address: str, timeout_s: float = 1.0) -> View:
        if view is None:
            raise NoAnswer(f"cannot reach {address}: Connection refused")
        return view

    monkeypatch.setattr(targets, "get_view", get_view)


def test_vs_names_the_view_service(directory: Path) -> None:
    state = ClusterState(
        directory, VS, 0.1, 5, 7000, 0.0, (_record(directory, "viewserver", "viewserver", VS),)
    )
    assert targets.resolve(state, "vs").name == "viewserver"
    assert targets.resolve(state, VS).name == "viewserver"


@pytest.mark.parametrize(
    ("view", "code", "line"),
    [
        (View(3, PRIMARY, ()), 4, "view 3 has no backup"),
        (
            View(3, PRIMARY, ("127.0.0.1:9999",)),
            4,
            "the backup 127.0.0.1:9999 is not a process of this cluster",
        ),
        # the view service does not answer: unavailable (3), as for every command (docs/guide.md)
        (None, 3, f"cannot tell who is backup: cannot reach {VS}: Connection refused"),
    ],
)
def test_a_role_that_names_no_process_is_one_line_and_kills_nothing(
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    view: View | None,
    code: int,
    line: str,
) -> None:
    _view(monkeypatch, view)
    result = run_main(monkeypatch, capsys, directory, "cluster", "kill", "backup", "--dir", ".")
    assert result == (code, "", f"pbkv: error: {line}\n")


def test_logs_of_a_role_are_the_logs_of_the_process_holding_it(
    directory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _view(monkeypatch, View(2, BACKUP, (PRIMARY,)))  # s2 was promoted
    code, out, err = run_main(
        monkeypatch, capsys, directory, "cluster", "logs", "primary", "--dir", "."
    )
    assert (code, err) == (0, "")
    assert [line.split()[1:4] for line in out.splitlines()] == [["s2", "view=2", "view_learned"]]


def test_logs_show_the_faults_the_cluster_layer_injected(
    directory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    record_cluster_event(logs_dir(directory), "cluster_kill", 1_795_289_409.5, target="s1")
    code, out, _ = run_main(monkeypatch, capsys, directory, "cluster", "logs", "--dir", ".")
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()] == ["viewserver", "s1", "s2", "cluster"]
    assert out.splitlines()[-1].endswith(" cluster view=- cluster_kill target=s1")


def test_after_down_the_logs_on_disk_are_named_in_order_and_found_by_address(
    directory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (directory / "cluster.json").unlink()  # down: only the logs are left
    same = "2026-11-21T19:30:05.000Z server={} view=2 pinged\n"
    for name, address in (("s10", "127.0.0.1:7010"), ("s2", BACKUP), ("s1", PRIMARY)):
        with open(logs_dir(directory) / f"{name}.log", "a") as stream:
            stream.write(same.format(address))
    assert list(targets.logs_on_disk(directory)) == ["viewserver", "s1", "s2", "s10"]
    code, out, _ = run_main(
        monkeypatch, capsys, directory, "cluster", "logs", "--event", "pinged", "--dir", "."
    )
    assert code == 0  # one stamp: the order of the files, the view service's first then s1, s2, s10
    assert [line.split()[1] for line in out.splitlines()] == ["s1", "s2", "s10"]
    code, out, _ = run_main(
        monkeypatch, capsys, directory, "cluster", "logs", PRIMARY, "--dir", "."
    )
    assert code == 0  # the lines the node at that address wrote, by its own name in them
    assert [line.split()[1:4] for line in out.splitlines()] == [
        ["s1", "view=2", "role_change"],
        ["s1", "view=2", "pinged"],
    ]


def test_a_replicated_view_service_with_no_member_answering_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    members = tuple(
        ProcessRecord(
            name, "viewserver", "viewserver", f"127.0.0.1:{port}", 0, 0, 0, "vs.log", (), 0.0
        )
        for port, name in enumerate(("viewserver", "viewserver2", "viewserver3"), start=1)
    )  # closed ports: every member refuses at once
    save_state(
        ClusterState(tmp_path, "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", 0.1, 5, 0, 0.0, members)
    )
    code, out, err = run_main(monkeypatch, capsys, tmp_path, "cluster", "kill", "vs", "--dir", ".")
    assert (code, out) == (3, "")
    assert (
        err.startswith("pbkv: error: no view service member leads now: ") and err.count("\n") == 1
    )


def test_restart_and_resume_of_viewserver_name_a_stopped_member_never_the_live_leader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen with ``up --etcd``: ``kill viewserver`` twice (the leader each time), then ``restart
    viewserver`` stopped and restarted the one member still serving, and both killed members
    stayed dead (``viewserver`` named a stopped member only when exactly one was)."""
    record_replicated_view_service(tmp_path, 91_000)
    states = {91_001: "dead", 91_002: "dead", 91_003: "alive"}
    acted = stub_process_actions(monkeypatch, states, 91_009)
    code, _, err = run_main(
        monkeypatch, capsys, tmp_path, "cluster", "restart", "viewserver", "--dir", "."
    )
    assert (code, err, acted) == (0, "", ["viewserver"])
    states.update({91_001: "alive", 91_002: "paused"})
    code, _, err = run_main(monkeypatch, capsys, tmp_path, "cluster", "resume", "vs", "--dir", ".")
    assert (code, err, acted) == (0, "", ["viewserver", "viewserver2"])


def test_after_down_a_role_or_a_name_with_no_log_is_one_line_not_silence(
    directory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After ``down`` a typo (``logs s9``) or a role printed nothing at all and exited 0."""
    (directory / "cluster.json").unlink()  # down: only the logs are left
    for target, said in (
        ("s9", "no log of s9 in logs (there are: viewserver, s1, s2)"),  # --dir .
        ("primary", "so no view names its primary: name a process (viewserver, s1, s2)"),
    ):
        code, out, err = run_main(
            monkeypatch, capsys, directory, "cluster", "logs", target, "--dir", "."
        )
        assert (code, out, err.count("\n")) == (4, "", 1) and said in err, err
    code, out, _ = run_main(monkeypatch, capsys, directory, "cluster", "logs", "vs", "--dir", ".")
    assert code == 0 and [line.split()[1] for line in out.splitlines()] == ["viewserver"]
