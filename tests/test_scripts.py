"""Every measurement script under scripts/ is a command like pbkv's own: ``--help`` prints its
usage and an unknown option is refused with one usage line and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "scripts").glob("*.py"))


def _run(script: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_script_answers_help_and_refuses_an_unknown_option(script: Path) -> None:
    helped = _run(script, "--help")
    assert helped.returncode == 0 and "usage:" in helped.stdout, helped.stderr[-300:]
    refused = _run(script, "--no-such-option")
    assert refused.returncode == 2, refused.stderr[-300:]
    assert "Traceback" not in refused.stderr and "usage:" in refused.stderr
