"""Start and stop a local Redis primary and replica for the side-by-side benchmark.

Both run Debian's ``redis-server`` on free loopback ports with persistence off (``--save ""
--appendonly no``), in a temporary directory, as children of this process. ``start`` returns
once the replica reports ``master_link_status:up`` and the primary counts one connected
replica; ``stop`` terminates both (SIGTERM, then SIGKILL) and removes the directory.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from typing import Final

from pbkv.bench.resp import Value, encode_command, parse_reply
from pbkv.cluster.processes import ProcessGroup, free_port

READY_TIMEOUT_S: Final = 20.0
POLL_INTERVAL_S: Final = 0.05


def redis_command(host: str, port: int, *arguments: str, timeout_s: float = 2.0) -> Value:
    """Run one command on a fresh blocking connection (for set-up, not for load).

    Raises:
        OSError: no connection, or no complete reply within ``timeout_s``.
    """
    with socket.create_connection((host, port), timeout=timeout_s) as connection:
        connection.sendall(encode_command(arguments))
        buffer = bytearray()
        while True:
            parsed = parse_reply(buffer, 0) if buffer else None
            if parsed is not None:
                return parsed[0]
            chunk = connection.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            buffer += chunk


def info_field(info: Value, name: str) -> str | None:
    """One ``name:value`` field of an ``INFO`` reply."""
    if not isinstance(info, bytes):
        return None
    for line in info.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


class RedisPair(ProcessGroup):
    """A Redis primary and its replica on loopback; use as a context manager."""

    def __init__(
        self,
        binary: str = "redis-server",
        host: str = "127.0.0.1",
        appendfsync: str | None = None,
        replicas: int = 1,
    ) -> None:
        self.appendfsync = appendfsync
        """None: no persistence; else ``appendonly yes`` with this ``appendfsync``."""
        super().__init__("pbkv-redis-")
        self.binary = binary
        self.host = host
        self.replicas = replicas
        """Replicas of the primary (writes are then ``SET`` + ``WAIT replicas 0``)."""
        self.primary_port = 0
        self.replica_ports: list[int] = []

    @property
    def replica_port(self) -> int:
        return self.replica_ports[0] if self.replica_ports else 0

    @property
    def primary_address(self) -> str:
        return f"{self.host}:{self.primary_port}"

    @property
    def primary_pid(self) -> int:
        return self.processes[0].pid

    @property
    def replica_pid(self) -> int:
        return self.processes[1].pid

    def start(self) -> RedisPair:
        """Start both servers and wait for replication to be up.

        Raises:
            FileNotFoundError: ``redis-server`` is not installed.
            RuntimeError: a server exited during start-up.
            TimeoutError: replication did not come up in time (both are stopped again).
        """
        if shutil.which(self.binary) is None:
            raise FileNotFoundError(f"{self.binary} not found (apt-get install -y redis-server)")
        self.make_directory()
        try:
            self.primary_port = free_port(self.host)
            self._spawn("primary", self.primary_port)
            self._wait_for(lambda: redis_command(self.host, self.primary_port, "PING") == "PONG")
            for index in range(self.replicas):
                port = free_port(self.host)
                self.replica_ports.append(port)
                role = "replica" if index == 0 else f"replica{index + 1}"
                self._spawn(role, port, "--replicaof", self.host, f"{self.primary_port}")
            self._wait_for(self._replication_up)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, role: str, port: int, *extra: str) -> None:
        assert self.directory is not None
        arguments = [
            self.binary,
            "--port", str(port),
            "--bind", self.host,
            "--save", "",
            *(("--appendonly", "no") if self.appendfsync is None else
              ("--appendonly", "yes", "--appendfsync", self.appendfsync,
               "--appendfilename", f"{role}.aof", "--appenddirname", f"{role}-aof")),
            "--protected-mode", "no",
            "--daemonize", "no",
            "--dir", str(self.directory),
            "--dbfilename", f"{role}.rdb",
            # The replica's first sync starts at once instead of after Redis's 5 s default.
            "--repl-diskless-sync-delay", "0",
            *extra,
        ]  # fmt: skip
        self.spawn(arguments, self.directory / f"{role}.log")

    def _replication_up(self) -> bool:
        for port in self.replica_ports:
            replica = redis_command(self.host, port, "INFO", "replication")
            if info_field(replica, "master_link_status") != "up":
                return False
        primary = redis_command(self.host, self.primary_port, "INFO", "replication")
        return info_field(primary, "connected_slaves") == str(self.replicas)

    def _wait_for(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            exited = self.exited()
            if exited is not None:
                raise RuntimeError(f"redis-server exited with code {exited.returncode}")
            try:
                if ready():
                    return
            except OSError as error:
                last_error = error
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"redis pair not ready after {READY_TIMEOUT_S} s ({last_error})")
