"""Fixtures for the view service replicated on etcd: a real 3-member etcd on loopback ports
(``pbkv.cluster.etcd.EtcdCluster``, temporary data directories, killed at teardown) and
``EtcdViewCluster``: three ``pbkv viewserver --etcd`` processes plus servers, as real processes.

``etcd`` is one etcd cluster per module (tests use a prefix of their own); a test that kills or
pauses etcd members takes ``own_etcd`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pbkv.cluster.etcd import EtcdCluster
from pbkv.core.messages import StatusRequest, ViewServiceStatus
from pbkv.runtime.group import call_view_service_blocking
from pbkv.wire import MESSAGES
from tests.cluster.helpers import kill_leftovers, pbkv
from tests.conftest import STARTUP_TIMEOUT_S, Cluster, NodeProcess, free_port

_prefixes = itertools.count(1)

if shutil.which("etcd") is None:  # make test installs it (scripts/ensure_etcd.sh)
    pytest.skip("etcd is not installed: run scripts/ensure_etcd.sh", allow_module_level=True)


@pytest.fixture
def etcd_cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for one ``pbkv cluster up --etcd``; at teardown ``down`` runs and any process
    still holding a file in it is killed by pid (and the test fails)."""
    directory = tmp_path / "cluster"
    yield directory
    if (directory / "cluster.json").exists():
        pbkv("cluster", "down", "--dir", str(directory))
    assert not kill_leftovers(tmp_path), "processes left running after the test"


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

    def __init__(
        self,
        directory: Path,
        endpoints: str,
        members: int = 3,
        member_endpoints: dict[int, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(directory, **options)
        self.endpoints = endpoints
        self.prefix = f"/pbkv/test{next(_prefixes)}-{free_port()}"
        own = member_endpoints or {}
        self.viewservers = [self._member(i, own.get(i, endpoints)) for i in range(members)]
        self.viewserver = self.viewservers[0]

    def _member(self, index: int, endpoints: str) -> NodeProcess:
        args = ["--listen", "127.0.0.1:{port}", "--ping-interval", str(self.ping_interval)]
        args += ["--dead-pings", str(self.dead_pings), "--etcd", endpoints]
        args += ["--etcd-prefix", self.prefix, *self.node_args]
        log = self.directory / f"viewserver{index + 1}.log"
        return NodeProcess("viewserver", args, free_port(), log)

    @property
    def address(self) -> str:
        return ",".join(node.address for node in self.viewservers)

    def start(self, servers: int = 2, **server_options: Any) -> Cluster:
        """The first member first (it becomes the leader), then the others and the servers."""
        first = self.viewservers[0].start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while " leading " not in first.log_text():
            assert time.monotonic() < deadline, first.log_text()
            time.sleep(0.02)
        for node in self.viewservers[1:]:
            node.spawn()
        for node in self.viewservers[1:]:
            node.wait_listening()
        nodes = [self.add_server(wait=False, **server_options) for _ in range(servers)]
        for node in nodes:
            node.wait_listening()
        if nodes:
            names = {node.name for node in nodes}
            self.wait_for(lambda s: names <= {info.name for info in s.servers}, "servers known")
            view = self.wait_stable()
            rank = {name: index for index, name in enumerate(view.members())}
            self.servers.sort(key=lambda node: rank.get(node.name, len(rank)))
        return self

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
        """``member_endpoints={index: "..."}`` gives one member other etcd endpoints."""
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


class ByteProxy:
    """A TCP proxy for etcd's gRPC (bytes, not frames) in a background thread; ``cut()`` turns
    it into a black hole both ways (connections stay open, nothing passes) until ``heal()``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.is_cut = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> ByteProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    def cut(self) -> None:
        self.is_cut = True

    def heal(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target.rsplit(":", 1)
        if self.is_cut:
            return  # accepted and never answered, like a partition
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pump(reader, upstream_writer),
            self._pump(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.is_cut:
                    writer.write(data)
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


@pytest.fixture
def byte_proxies() -> Iterator[Callable[[str], ByteProxy]]:
    made: list[ByteProxy] = []

    def make(target: str) -> ByteProxy:
        proxy = ByteProxy(target).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
