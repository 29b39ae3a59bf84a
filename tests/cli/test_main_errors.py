"""The CLI's error contract: one line on stderr, a non-zero exit code, never a traceback."""

from __future__ import annotations

import pytest

from tests.cli.helpers import run_pbkv


@pytest.mark.parametrize(
    "args",
    [
        ("put",),  # missing arguments
        ("frobnicate",),  # unknown command
        ("get", "k", "--timeout", "soon"),  # bad option value
        ("server", "--listen", "not-an-address", "--viewserver", "127.0.0.1:1"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    result = run_pbkv(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pbkv: error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
