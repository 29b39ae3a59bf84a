"""Fixtures for the view service replicated on etcd: a real 3-member etcd on loopback ports
(``pbkv.cluster.etcd.EtcdCluster``, temporary data directories, killed at teardown) and
``EtcdViewCluster``: three ``pbkv viewserver --etcd`` processes plus servers, as real processes.

``etcd`` is one etcd cluster per module (tests use a prefix of their own); a test that kills or
pauses etcd members takes ``own_etcd`` instead.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pbkv.cluster.etcd import EtcdCluster
from pbkv.core.messages import StatusRequest, ViewServiceStatus
from pbkv.runtime.group import call_view_service_blocking
from pbkv.wire import MESSAGES
from tests.conftest import Cluster, NodeProcess, free_port

_prefixes = itertools.count(1)

if shutil.which("etcd") is None:  # make test installs it (scripts/ensure_etcd.sh)
    pytest.skip("etcd is not installed: run scripts/ensure_etcd.sh", allow_module_level=True)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd")
    try:
        yield cluster.start()
    finally:
        cluster.close()


class EtcdViewCluster(Cluster):
    """``Cluster`` with three view service processes sharing one etcd prefix; ``address`` is
    their list, so servers and clients are given ``A,B,C``."""

    def __init__(self, directory: Path, endpoints: str, members: int = 3, **options: Any) -> None:
        super().__init__(directory, **options)
        self.endpoints = endpoints
        self.prefix = f"/pbkv/test{next(_prefixes)}-{free_port()}"
        self.viewservers = [self._member(index) for index in range(members)]
        self.viewserver = self.viewservers[0]

    def _member(self, index: int) -> NodeProcess:
        args = ["--listen", "127.0.0.1:{port}", "--ping-interval", str(self.ping_interval)]
        args += ["--dead-pings", str(self.dead_pings), "--etcd", self.endpoints]
        args += ["--etcd-prefix", self.prefix, *self.node_args]
        log = self.directory / f"viewserver{index + 1}.log"
        return NodeProcess("viewserver", args, free_port(), log)

    @property
    def address(self) -> str:
        return ",".join(node.address for node in self.viewservers)

    def start(self, servers: int = 2, **server_options: Any) -> Cluster:
        for node in self.viewservers[1:]:
            node.spawn()
        for node in self.viewservers[1:]:
            node.wait_listening()
        return super().start(servers, **server_options)

    def status(self, timeout: float = 2.0) -> ViewServiceStatus:
        members = tuple(node.address for node in self.viewservers)
        _, reply = call_view_service_blocking(members, StatusRequest(), MESSAGES, timeout)
        assert isinstance(reply, ViewServiceStatus), reply
        return reply

    def leader(self, timeout: float = 10.0) -> NodeProcess:
        """The view service process that answers as leader."""
        deadline = time.monotonic() + timeout
        members = tuple(node.address for node in self.viewservers)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                member, _ = call_view_service_blocking(members, StatusRequest(), MESSAGES, 0.5)
                return next(node for node in self.viewservers if node.address == member)
            time.sleep(0.02)
        raise AssertionError("no view service leader")

    def logs(self, tail: int = 60) -> str:
        parts = [super().logs(tail)]
        for node in self.viewservers[1:]:
            lines = node.log_text().splitlines()[-tail:]
            parts.append(f"===== {node.log_path.name} ({node.name})\n" + "\n".join(lines))
        return "\n".join(parts)

    def fatal_lines(self) -> list[str]:
        lines = super().fatal_lines()
        for node in self.viewservers[1:]:
            text = node.log_text()
            lines += [
                line for line in text.splitlines() if " fatal " in line or "Traceback" in line
            ]
        return lines

    def close(self) -> None:
        super().close()
        for node in self.viewservers:
            node.cont()
            node.kill()


@pytest.fixture
def etcd_view_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., EtcdViewCluster]]:
    """``make(endpoints, servers=2, **Cluster options)`` -> a started ``EtcdViewCluster``."""
    made: list[EtcdViewCluster] = []

    def make(endpoints: str, servers: int = 2, **options: Any) -> EtcdViewCluster:
        cluster = EtcdViewCluster(tmp_path / f"cluster{len(made)}", endpoints, **options)
        made.append(cluster)
        cluster.start(servers)
        return cluster

    yield make
    report = getattr(request.node, "rep_call", None)
    fatal: list[str] = []
    for cluster in made:
        cluster.close()
        fatal += cluster.fatal_lines()
        if report is not None and report.failed:
            print(cluster.logs())
    assert not fatal, "a process hit a fatal error:\n" + "\n".join(fatal)
