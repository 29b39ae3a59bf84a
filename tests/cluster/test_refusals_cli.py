"""Refusals a retry cannot pass end a command at once with their own exit status (review):
no secret or a wrong one where the cluster has one is 4 (refused), a server where the view
service was expected (or the reverse) is 2 (usage). Before, each waited out its timeout and
said the server did not answer (3), or that the operation may have taken effect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.helpers import state_file

pytestmark = pytest.mark.integration


def run(tmp_path: Path, *args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    """``pbkv ARGS`` from a directory with no cluster, with ``token`` as the only secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBKV_")}
    command = [sys.executable, "-m", "pbkv"]
    if token is not None:
        (tmp_path / "token").write_text(token)
        command += ["--auth-token-file", str(tmp_path / "token")]
    return subprocess.run(
        [*command, *args, "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )


def test_refusals_for_good_exit_at_once_with_their_own_status(
    running: Path, tmp_path: Path
) -> None:
    state = state_file(running)
    viewserver = state["viewserver"]
    server = state["processes"][1]["address"]
    secret = (running / "auth-token").read_text().strip()
    cases = [
        (("status", "--viewserver", viewserver), None, 4, "presented no secret"),
        (("dump", "--server", server), "w" * 32, 4, "does not hold our secret"),
        (("get", "k", "--viewserver", viewserver), None, 4, "presented no secret"),
        (("status", "--viewserver", server), secret, 2, "is a server, not the view service"),
        (("dump", "--server", viewserver), secret, 2, "is the view service, not a server"),
        (("put", "k", "v", "--viewserver", server), secret, 2, "is a server, not the view"),
    ]
    for args, token, code, reason in cases:
        result = run(tmp_path, *args, token=token)
        assert result.returncode == code, (args, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert reason in line, (args, line)
