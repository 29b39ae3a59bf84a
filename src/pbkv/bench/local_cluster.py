"""Start and stop a pbkv view service and two servers as subprocesses, for benchmarks.

Each node is ``python -m pbkv viewserver|server ...`` on a free loopback port, logging to a
file in a temporary directory. ``start`` starts the view service, then the first server (it
becomes primary), then the second (backup), and returns once the view service reports a view
with both that the primary has acknowledged — the backup holds the state and writes are
replicated. ``kill_primary`` sends SIGKILL to whichever server is primary now; ``stop``
terminates everything it started and removes the directory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pbkv.cluster.processes import ProcessGroup, free_port
from pbkv.core.messages import StatusRequest, View, ViewServiceStatus
from pbkv.runtime import rpc
from pbkv.wire import MESSAGES

READY_TIMEOUT_S: Final = 30.0
POLL_INTERVAL_S: Final = 0.05
STATUS_TIMEOUT_S: Final = 0.5
LOG_TAIL_LINES: Final = 15


@dataclass(slots=True)
class Node:
    """One process of the cluster."""

    name: str
    address: str
    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def viewservice_status(viewserver: str) -> ViewServiceStatus | None:
    """The view service's status, or None when it does not answer."""
    try:
        reply = rpc.call(viewserver, StatusRequest(), MESSAGES, STATUS_TIMEOUT_S)
    except (OSError, TimeoutError):
        return None
    return reply if isinstance(reply, ViewServiceStatus) else None


class LocalCluster(ProcessGroup):
    """A view service and ``servers`` servers on loopback; use as a context manager."""

    def __init__(
        self,
        servers: int = 2,
        host: str = "127.0.0.1",
        extra_server_args: tuple[str, ...] = (),
        fsync: str | None = None,
        extra_viewserver_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__("pbkv-bench-")
        if servers < 1:
            raise ValueError("a cluster needs at least one server")
        self.server_count = servers
        self.host = host
        self.extra_server_args = extra_server_args
        self.extra_viewserver_args = extra_viewserver_args
        self.fsync = fsync
        """None: servers in memory; else ``--data-dir`` per server with this ``--fsync``."""
        self.viewserver = ""
        self.nodes: list[Node] = []

    def start(self) -> LocalCluster:
        """Start every process and wait for a serving, acknowledged view.

        Raises:
            RuntimeError: a process exited during start-up (its log's tail is in the message).
            TimeoutError: no serving view in time. Everything started is stopped again.
        """
        directory = self.make_directory()
        try:
            self.viewserver = f"{self.host}:{free_port(self.host)}"
            data_dir = str(directory / "viewserver.data")
            self._spawn(
                "viewserver",
                self.viewserver,
                "viewserver",
                "--listen",
                self.viewserver,
                "--data-dir",
                data_dir,
                *self.extra_viewserver_args,
            )
            self._wait_for(lambda: viewservice_status(self.viewserver) is not None, "answer")
            for index in range(self.server_count):
                address = f"{self.host}:{free_port(self.host)}"
                self._spawn(
                    f"s{index + 1}",
                    address,
                    "server",
                    "--listen",
                    address,
                    "--viewserver",
                    self.viewserver,
                    *self.extra_server_args,
                    *self.durable_args(directory / f"s{index + 1}.data"),
                )
                self._wait_for(functools.partial(self._serving, min(index + 1, 2)), "serve")
        except BaseException:
            self.stop()
            raise
        return self

    def durable_args(self, data_dir: Path) -> tuple[str, ...]:
        if self.fsync is None:
            return ()
        return ("--data-dir", str(data_dir), "--fsync", self.fsync)

    def _spawn(self, name: str, address: str, *arguments: str) -> None:
        assert self.directory is not None
        log_file = self.directory / f"{name}.log"
        process = self.spawn([sys.executable, "-m", "pbkv", *arguments], log_file)
        self.nodes.append(Node(name, address, process, log_file))

    def _serving(self, members: int) -> bool:
        status = viewservice_status(self.viewserver)
        if status is None or not status.acknowledged:
            return False
        return len(status.view.members()) >= members

    def _wait_for(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready():
            for node in self.nodes:
                if node.process.poll() is not None:
                    code = node.process.returncode
                    raise RuntimeError(f"{node.name} exited with code {code}:\n{self.tail(node)}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the cluster did not {what} in {READY_TIMEOUT_S:g} s")
            time.sleep(POLL_INTERVAL_S)

    def tail(self, node: Node) -> str:
        """The last lines of ``node``'s log."""
        with contextlib.suppress(OSError):
            lines = node.log_file.read_text(errors="replace").splitlines()
            return "\n".join("  " + line for line in lines[-LOG_TAIL_LINES:])
        return "  (no log)"

    def view(self) -> View | None:
        status = viewservice_status(self.viewserver)
        return None if status is None else status.view

    def node_at(self, address: str | None) -> Node | None:
        return next((node for node in self.nodes if node.address == address), None)

    def primary(self) -> Node:
        """The server that is primary in the current view.

        Raises:
            RuntimeError: the view service does not answer or names no primary we started.
        """
        view = self.view()
        node = self.node_at(None if view is None else view.primary)
        if node is None:
            raise RuntimeError(f"no primary of this cluster in {view}")
        return node

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its pid."""
        node = self.primary()
        os.kill(node.pid, signal.SIGKILL)
        return node.pid

    def server_pids(self) -> dict[str, int]:
        """Address -> pid of every server still running."""
        return {node.address: node.pid for node in self.nodes[1:] if node.process.poll() is None}

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and remove the directory (idempotent)."""
        super().stop()
        self.nodes.clear()
