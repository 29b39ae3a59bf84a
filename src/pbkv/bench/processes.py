"""Child processes of a benchmark: free ports, start with a log file, stop for sure.

``ProcessGroup`` is what ``LocalCluster`` and ``RedisPair`` share: a temporary directory for
logs and data, the processes started in it, and ``stop`` — SIGTERM to all (last started
first), SIGKILL to any still alive after ``STOP_TIMEOUT_S``, then the directory is removed.
It is a context manager, so an exception or Ctrl-C in a benchmark still stops everything, and on
Linux every child also gets SIGTERM when its parent dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

STOP_TIMEOUT_S: Final = 5.0
PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies, however it dies (Linux), so a
    benchmark killed with SIGKILL leaves no servers behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class ProcessGroup:
    """Processes started together and stopped together; subclasses define ``start``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.directory: Path | None = None
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> Self:
        raise NotImplementedError

    def make_directory(self) -> Path:
        self.directory = Path(tempfile.mkdtemp(prefix=self.prefix))
        return self.directory

    def spawn(self, arguments: Sequence[str], log_file: Path) -> subprocess.Popen[bytes]:
        """Start ``arguments`` with stdout and stderr going to ``log_file``."""
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                list(arguments),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        self.processes.append(process)
        return process

    def exited(self) -> subprocess.Popen[bytes] | None:
        """A process of the group that has exited, if any."""
        return next((process for process in self.processes if process.poll() is not None), None)

    def stop(self) -> None:
        """Stop every process and remove the directory (idempotent)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self.stop()
