"""``pbkv cluster partition/isolate/heal`` say in plain words who no longer hears whom, what the
cluster will do about it and where to watch, instead of one terse admin order a line
(``s1: drop both with 127.0.0.1:7000``). No processes: the view service's answer and the admin
port are stand-ins (``monkeypatch``); the real cut is in test_cluster_commands.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from pbkv.cli.main import cli
from pbkv.cluster import faults, processes, targets
from pbkv.cluster.state import ClusterState, ProcessRecord, save_state
from pbkv.core.messages import View

VS, PRIMARY, BACKUP, IDLE = "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"
VIEW = View(2, PRIMARY, (BACKUP,))


def _record(name: str, kind: str, address: str, port: int) -> ProcessRecord:
    return ProcessRecord(
        name, kind, "idle", address, pid=os.getpid(), admin_port=port, metrics_port=port + 100,  # type: ignore[arg-type]
        log_file=f"{name}.log", argv=(name,), started_at=0.0,
    )  # fmt: skip


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recorded cluster of a view service and s1..s3 (view 2: s1 primary, s2 backup, s3
    idle), every process alive, whose admin ports take every order."""
    records = [_record("viewserver", "viewserver", VS, 7100)] + [
        _record(f"s{i}", "server", address, 7100 + i)
        for i, address in enumerate((PRIMARY, BACKUP, IDLE), start=1)
    ]
    save_state(ClusterState(tmp_path, VS, 0.1, 5, 7000, 0.0, tuple(records)))
    monkeypatch.setattr(targets, "get_view", lambda address, timeout_s=1.0: VIEW)
    monkeypatch.setattr(faults, "send_admin", lambda address, message, timeout_s: None)
    monkeypatch.setattr(processes, "process_state", lambda pid, argv=None: "alive")
    return tmp_path


def _run(directory: Path, *args: str) -> list[str]:
    result = CliRunner().invoke(cli, ["cluster", *args, "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_partition_says_who_is_cut_off_what_to_expect_and_where_to_watch(
    directory: Path,
) -> None:
    done, expect, watch = _run(directory, "partition", "primary", "viewserver")
    assert done == (
        f"cut: s1 (primary, {PRIMARY}) and viewserver ({VS}) no longer hear each other; "
        "clients still reach both"
    )
    assert expect.startswith(
        "expect: the view service stops hearing s1: after about 0.5 s it declares it dead and "
        "promotes a backup. s1 runs on and still believes it is primary, but completes nothing"
    )
    assert watch == (
        "watch: pbkv cluster status --watch, pbkv cluster logs --follow "
        "(server_declared_dead, view_change, client_refused); undo: pbkv cluster heal"
    )


@pytest.mark.parametrize(
    ("args", "done", "expect"),
    [
        (
            ("partition", "s1", "s2"),
            f"cut: s1 (primary, {PRIMARY}) and s2 (backup, {BACKUP}) no longer hear each other",
            "expect: nothing changes until there is work: the next write or read waits for the "
            "backup, the primary reports it silent",
        ),
        (
            ("partition", "s2", "s1", "--one-way"),
            f"cut: what s2 (backup, {BACKUP}) sends to s1 (primary, {PRIMARY}) is lost; s1 "
            "still reaches s2",
            "expect: nothing changes until there is work",
        ),
        (
            ("partition", "viewserver", "backup", "--one-way"),
            f"cut: what viewserver ({VS}) sends to s2 (backup, {BACKUP}) is lost",
            "expect: s2's pings still arrive, so the view service counts it alive",
        ),
        (
            ("partition", "s3", "viewserver"),
            f"cut: s3 (idle, {IDLE}) and viewserver ({VS}) no longer hear each other",
            "expect: the view service stops hearing s3: after about 0.5 s it declares it dead, "
            "so it will not pick it as a backup; the view does not change",
        ),
        (
            ("isolate", "backup"),
            f"cut: s2 (backup, {BACKUP}) no longer hears viewserver, s1, s3 (nor they it)",
            "expect: the view service stops hearing s2: after about 0.5 s it declares it dead "
            "and names an idle server backup in its place",
        ),
    ],
)
def test_each_cut_is_worded_for_the_roles_it_separates(
    directory: Path, args: tuple[str, ...], done: str, expect: str
) -> None:
    lines = _run(directory, *args)
    assert len(lines) == 3
    assert lines[0].startswith(done) and lines[1].startswith(expect)
    assert lines[2].startswith("watch: pbkv cluster status --watch, pbkv cluster logs --follow")
    assert lines[2].endswith("; undo: pbkv cluster heal")


def test_heal_says_what_was_undone_and_names_what_was_not_running(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        processes, "process_state", lambda pid, argv=None: "dead" if argv == ("s3",) else "alive"
    )
    done, expect, watch = _run(directory, "heal")
    assert done == (
        "healed viewserver, s1, s2: every cut, lossy link and slow disk is undone; "
        "s3 not running (nothing to heal)"
    )
    assert expect.startswith("expect: servers cut off from the view service ping it again")
    assert watch == (
        "watch: pbkv cluster status --watch, pbkv cluster logs --follow "
        "(server_returned, view_learned)"
    )
