"""Running ``pbkv`` in this process, through its real entry point (``pbkv.cli.main.main``), so
that a test sees the exit code and the one-line error a user sees, at the cost of no process."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from pbkv.cli.main import main
from pbkv.cluster import manager, processes
from pbkv.cluster.state import ClusterState, ProcessRecord, save_state


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path, *args: str
) -> tuple[int, str, str]:
    """``pbkv ARGS`` run from ``cwd``: (exit code, stdout, stderr)."""
    monkeypatch.chdir(cwd)  # no ./.pbkv of the repository is installed
    monkeypatch.delenv("PBKV_CLUSTER_DIR", raising=False)
    monkeypatch.setattr(sys, "argv", ["pbkv", *args])
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


VIEWSERVER_MEMBERS = ("viewserver", "viewserver2", "viewserver3")


def record_replicated_view_service(directory: Path, first_pid: int) -> None:
    """A recorded cluster of three view service members on etcd (ports 1-3, pids
    ``first_pid`` + 1..3), no server: the stand-in of ``up --etcd`` for target tests."""
    members = tuple(
        ProcessRecord(name, "viewserver", "viewserver", f"127.0.0.1:{port}", first_pid + port,
                      0, 0, "vs.log", (), 0.0)
        for port, name in enumerate(VIEWSERVER_MEMBERS, start=1)
    )  # fmt: skip
    save_state(
        ClusterState(directory, "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", 0.1, 5, 0, 0.0, members)
    )


def stub_process_actions(
    monkeypatch: pytest.MonkeyPatch,
    states: dict[int, str],
    restarted_pid: int,
    label: Callable[[str, str], str] = lambda action, name: name,
) -> list[str]:
    """Process states from ``states`` (pid -> alive/paused/dead), and ``manager.restart`` and
    ``manager.resume`` replaced by stand-ins that record ``label(action, name)`` (a restart
    gives the process ``restarted_pid``) in the returned list: which process a command or a
    button acts on, with no process."""
    monkeypatch.setattr(processes, "process_state", lambda pid, argv=None: states[pid])
    acted: list[str] = []

    def restart(
        state: ClusterState, record: ProcessRecord, **options: object
    ) -> tuple[ClusterState, ProcessRecord]:
        acted.append(label("restart", record.name))
        return state, replace(record, pid=restarted_pid)

    def resume(record: ProcessRecord, cluster: ClusterState | None = None) -> None:
        acted.append(label("resume", record.name))

    monkeypatch.setattr(manager, "restart", restart)
    monkeypatch.setattr(manager, "resume", resume)
    monkeypatch.setattr(manager, "refuse_losing_data", lambda state, record: None)
    return acted
