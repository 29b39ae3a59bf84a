"""Running ``pbkv`` in this process, through its real entry point (``pbkv.cli.main.main``), so
that a test sees the exit code and the one-line error a user sees, at the cost of no process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pbkv.cli.main import main
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
