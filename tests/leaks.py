"""No process a test session started outlives it.

Review: a test whose cluster failed to form raised before its ``try``, and a view service and a
server it had started went on running after pytest exited; nothing noticed. Every process a
session starts inherits ``$PBKV_TEST_SESSION`` (set here, one value per pytest process, so per
xdist worker), including those that detach (``pbkv cluster up``'s nodes, etcd, chromium). At the
end of the session the processes still carrying this session's value get ``GRACE_S`` to exit;
the rest are killed and reported as an error of the session's last test, with their command
lines (which usually name the test's temporary directory).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

MARKER_ENV = "PBKV_TEST_SESSION"
GRACE_S = 10.0
PROC = Path("/proc")
HELPER_CODE = " -c from multiprocessing."
"""How multiprocessing starts its helpers (resource tracker, fork server): ours, when they are
this pytest process's children, end when it does."""


def carrying(marker: bytes) -> dict[int, str]:
    """Live processes (not this one) whose environment holds ``marker``: pid -> command line."""
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if HELPER_CODE in command and parent_of(entry) == os.getpid():
                continue
        except OSError:
            continue  # gone meanwhile, or not ours to read
        found[int(entry.name)] = command.strip()
    return found


def parent_of(entry: Path) -> int:
    """The parent pid in ``/proc/PID/stat`` (after the command name, which may hold spaces)."""
    return int((entry / "stat").read_text().rpartition(")")[2].split()[1])


def survivors(marker: bytes, grace_s: float) -> dict[int, str]:
    """What still carries ``marker`` after up to ``grace_s`` seconds (processes being stopped
    by the last teardown finish exiting meanwhile)."""
    deadline = time.monotonic() + grace_s
    while (alive := carrying(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def kill_all(processes: dict[int, str]) -> None:
    for pid in processes:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session() -> Iterator[None]:
    if not PROC.is_dir():
        yield
        return
    value = f"{os.getpid()}-{uuid.uuid4().hex}"
    os.environ[MARKER_ENV] = value
    yield
    leaked = survivors(f"{MARKER_ENV}={value}".encode(), GRACE_S)
    kill_all(leaked)
    if leaked:
        lines = "\n".join(f"  pid {pid}: {command[:300]}" for pid, command in leaked.items())
        pytest.fail(f"{len(leaked)} process(es) started by these tests outlived them:\n{lines}")
