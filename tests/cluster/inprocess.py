"""Running ``pbkv`` in this process, through its real entry point (``pbkv.cli.main.main``), so
that a test sees the exit code and the one-line error a user sees, at the cost of no process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pbkv.cli.main import main


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
