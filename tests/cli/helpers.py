"""Running ``pbkv`` as a subprocess, as a user does, and checking the one-line error contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

UNREACHABLE = "127.0.0.1:1"
"""An address where nothing listens."""


def run_pbkv(
    *args: str | bytes,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """``python -m pbkv ARGS`` with captured text output, stdin from /dev/null, ``env`` added to
    this process's environment (never raises on exit codes; ``TimeoutExpired`` after
    ``timeout``)."""
    return subprocess.run(
        [sys.executable, "-m", "pbkv", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The only stderr line of a command that must have failed with ``code``."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbkv: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


INTERRUPTIBLE_EXEC = (
    "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)
"""``python -c INTERRUPTIBLE_EXEC PROGRAM ARGS...`` runs PROGRAM with SIGINT delivered and
handled as in a shell. A test process may have inherited, or earlier tests' libraries (gRPC's
threads) may have left, SIGINT blocked or ignored, and both survive exec: Ctrl-C would then never
reach the command under test. A wrapper, not a ``preexec_fn`` or ``pty.fork``: code run between
fork and exec in this multi-threaded process may deadlock (Python 3.12 warns of it)."""
