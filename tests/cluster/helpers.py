"""Helpers for the ``pbkv cluster`` and ``pbkv demo`` tests: run the CLI as a subprocess, read
the state file, and prove that nothing is left running.

"Nothing left running" is checked from the operating system, not from our own bookkeeping:
every process a cluster starts holds its log file (in the cluster's directory) open, so any
process with an open file under the test's directory is a leftover. The fixture finalizers kill
such leftovers by pid and then fail the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pbkv.cluster.state import load_state
from pbkv.cluster.status import collect

PING_INTERVAL = "0.05"
COMMAND_TIMEOUT_S = 60.0


def pbkv(*args: str, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """``python -m pbkv ARGS`` with captured text output (never raises on exit codes)."""
    return subprocess.run(
        [sys.executable, "-m", "pbkv", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def cluster(directory: Path, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """``pbkv cluster ARGS --dir DIRECTORY``, which must succeed; returns stdout."""
    return ok(pbkv("cluster", *args, "--dir", str(directory), timeout=timeout))


def up(directory: Path, *extra: str) -> str:
    return cluster(directory, "up", "--base-port", "0", "--ping-interval", PING_INTERVAL, *extra)


def status(directory: Path) -> dict[str, Any]:
    """``pbkv cluster status --json``, run as a subprocess."""
    data: dict[str, Any] = json.loads(cluster(directory, "status", "--json"))
    return data


def quick_status(directory: Path) -> dict[str, Any]:
    """The same object as ``status``, computed in-process (for polling loops)."""
    return collect(load_state(directory)).to_json()


def node(data: dict[str, Any], name: str) -> dict[str, Any]:
    for entry in data["nodes"]:
        if entry["name"] == name:
            found: dict[str, Any] = entry
            return found
    raise AssertionError(f"no node {name} in {data['nodes']}")


def state_file(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "cluster.json").read_text())
    return data


def client(directory: Path, *args: str) -> str:
    """``pbkv ARGS`` against the cluster in ``directory`` (its view service, its secret), which
    must succeed; returns stdout."""
    secret = ("--auth-token-file", str(directory / "auth-token"))
    viewserver = state_file(directory)["viewserver"]
    return ok(pbkv(*secret, *args, "--viewserver", viewserver, "--timeout", "20"))


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pids_holding(directory: Path) -> list[int]:
    """Processes (other than us) with a file under ``directory`` open."""
    root = str(directory.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(link.startswith(root) for link in links):
            found.append(int(entry.name))
    return found


def kill_leftovers(directory: Path) -> list[int]:
    """SIGKILL every process holding a file under ``directory``; returns their pids."""
    leftovers = pids_holding(directory)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in leftovers:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return leftovers


def assert_nothing_running(directory: Path) -> None:
    """Fail (after killing them) if any process still holds a file under ``directory``."""
    leftovers = wait_for_exit(directory)
    assert not leftovers, f"processes left running: {leftovers}"


def wait_for_exit(directory: Path, timeout: float = 3.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while pids_holding(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    return kill_leftovers(directory)
