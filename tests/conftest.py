"""Shared fixtures: real pbkv processes on 127.0.0.1 and a frame-aware TCP proxy.

``cluster_factory(servers=2, ...)`` starts a view service and N servers as subprocesses
(``python -m pbkv ...``) on free ports with short ping intervals, waits until the view is
acknowledged with a synced backup, and always kills everything at teardown (printing the logs
of a failed test). ``cluster`` is a started two-server cluster. ``Cluster`` offers addresses,
``kill``/``stop``/``cont``/``restart`` of each process, status and dumps, clients, and waits.
``TcpProxy`` sits in front of a server (via ``--advertise``) or of the view service (via a
server's ``--viewserver``) and drops whole frames at random or cuts the link.

Every test runs with authentication on, as ``pbkv cluster up`` does: ``$PBKV_AUTH_TOKEN`` is set
to ``TEST_TOKEN`` for this process and every process it starts, so nodes demand the secret and
clients and tools present it. Tests of a missing or wrong secret override it explicitly.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pbkv
from pbkv import build
from pbkv.cli.client_commands import dump_server
from pbkv.cluster.processes import FREE_PORT_RANGE_ENV
from pbkv.core.messages import (
    AnyMessage,
    Operation,
    Reply,
    Request,
    StatusRequest,
    View,
    ViewServiceStatus,
)
from pbkv.runtime import auth, security
from pbkv.runtime.auth import MAGIC, TOKEN_ENV
from pbkv.runtime.rpc import Channel
from pbkv.wire import FRAME_HEADER, MESSAGES
from tests.leaks import no_process_outlives_the_session  # noqa: F401  (an autouse fixture)


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile pbkv's sources once, before any process starts (the controller only).

    The suite starts its view services, servers and CLI commands as ``python -m pbkv``
    processes. Where ``PYTHONDONTWRITEBYTECODE`` is set (this project's machines set it) none
    of them writes the ``.pyc`` files of an editable install, so each compiled every module it
    imports from source again: 0.3 s of CPU per process (``pbkv --help``: 0.82 s of CPU, 0.52 s
    with the ``.pyc`` files). Python reads ``.pyc`` files whatever that variable says, and
    ignores one older than its source."""
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(Path(pbkv.__file__).parent, quiet=1)


TEST_TOKEN = "pbkv-test-secret-0123456789abcdef"
os.environ[TOKEN_ENV] = TEST_TOKEN
TEST_PING_INTERVAL_S = 0.05
TEST_DEAD_PINGS = 5
STARTUP_TIMEOUT_S = 20.0
VIEW_TIMEOUT_S = 20.0


def worker_port_range(low: int = 20000, high: int = 32000) -> tuple[int, int]:
    """This pytest-xdist worker's slice of ``low..high`` (ports below Linux's ephemeral range,
    so a restarted node gets its port back), the whole range without xdist. Test workers draw
    disjoint ports: a cluster one worker stopped and resumes never finds its recorded port taken
    by another worker's cluster (seen once: ``up --resume`` on etcd, admin port in use)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1")
    if not worker.startswith("gw") or count <= 1:
        return low, high
    index, size = int(worker[2:]), (high - low) // count
    return low + index * size, low + (index + 1) * size


PORT_RANGE = worker_port_range()
os.environ[FREE_PORT_RANGE_ENV] = f"{PORT_RANGE[0]}-{PORT_RANGE[1]}"  # pbkv cluster's draws
LISTENING = re.compile(r" listening address=(\S+)")
ADMIN_LISTENING = re.compile(r" admin_listening address=(\S+)")


patches_compiled_code = pytest.mark.skipif(
    build.compiled(),
    reason="replaces a method of a compiled class; make test runs it on the pure build",
)
"""For tests that spy on or break a method by replacing it: the pure build runs them."""


def free_port() -> int:
    """A port that is free now, outside the range the kernel hands to outgoing connections."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(*PORT_RANGE)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@pytest.fixture(autouse=True)
def _forget_cluster_credentials() -> Iterator[None]:
    """A test that loaded a cluster directory made this process present that cluster's secret
    (``pbkv.cluster.credentials.install``); the next test starts from ``$PBKV_AUTH_TOKEN``."""
    yield
    auth.set_cli_token(None)
    auth.set_cluster_token(None, chosen=True)
    auth.set_cluster_token(None, chosen=False)
    security.set_cli_tls(None)
    security.set_cluster_tls(None)


# --- processes -------------------------------------------------------------------------------


class PortTaken(RuntimeError):
    """The process could not bind its port (someone took it since ``free_port``)."""


class NodeProcess:
    """One ``python -m pbkv viewserver|server`` process, its log file, and signals to it.
    ``{port}`` in ``args`` stands for the listen port; on its very first start, a port taken
    in the meantime is replaced by another free one."""

    def __init__(self, kind: str, args: list[str], port: int, log_path: Path) -> None:
        self.kind = kind
        self.args = args
        self.port = port
        self.started_once = False
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.address = f"127.0.0.1:{port}"
        self.admin: str | None = None
        self.proxy: TcpProxy | None = None
        self.viewserver_proxy: TcpProxy | None = None
        self.exit_codes: list[int] = []
        self._log_offset = 0

    @property
    def name(self) -> str:
        """The node's name in views (the proxy's address when it is advertised behind one)."""
        return self.proxy.address if self.proxy is not None else self.address

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> NodeProcess:
        """Start the process and wait until it listens."""
        return self.spawn().wait_listening(timeout)

    def spawn(self) -> NodeProcess:
        """Start the process without waiting (then ``wait_listening``)."""
        assert not self.alive, f"{self.name} is running"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            args = [arg.replace("{port}", str(self.port)) for arg in self.args]
            command = [sys.executable, "-m", "pbkv", self.kind, *args]
            self.popen = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        return self

    def wait_listening(self, timeout: float = STARTUP_TIMEOUT_S) -> NodeProcess:
        for _ in range(5):
            try:
                return self._wait_listening(timeout)
            except PortTaken:
                if self.started_once:
                    raise
                self.port = free_port()
                self.address = f"127.0.0.1:{self.port}"
                if self.proxy is not None:
                    self.proxy.target = self.address
                self.spawn()
        raise RuntimeError("no free port to start on")

    def _wait_listening(self, timeout: float) -> NodeProcess:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")[self._log_offset :]
            if (match := LISTENING.search(text)) is not None:
                if admin := ADMIN_LISTENING.search(text):
                    self.admin = admin.group(1)
                assert match.group(1) == self.address, text
                self.started_once = True
                return self
            if self.popen.poll() is not None:
                if "address already in use" in text:
                    raise PortTaken(text)
                raise RuntimeError(f"{self.kind} exited with {self.popen.returncode}:\n{text}")
            time.sleep(0.02)
        raise RuntimeError(f"{self.kind} did not start in {timeout} s:\n{self.log_text()}")

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def signal(self, number: int) -> None:
        if self.alive:
            os.kill(self.pid, number)

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.popen is not None and self.alive:
            self.popen.kill()
            self._reap()

    def terminate(self, timeout: float = 5.0) -> int:
        """SIGTERM; returns the exit status."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)
        self.popen.terminate()
        self.popen.wait(timeout)
        return self._reap()

    def stop(self) -> None:
        """SIGSTOP: the process freezes with its connections open."""
        self.signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.signal(signal.SIGCONT)

    def restart(self) -> NodeProcess:
        """Kill (if running) and start again on the same port: the same name, empty state."""
        self.kill()
        return self.start()

    def _reap(self) -> int:
        assert self.popen is not None
        code = self.popen.wait()
        self.exit_codes.append(code)
        return code

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- the cluster -----------------------------------------------------------------------------


class Cluster:
    """A view service and servers as real processes; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        ping_interval: float = TEST_PING_INTERVAL_S,
        dead_pings: int = TEST_DEAD_PINGS,
        data_dir: bool = False,
        admin: bool = False,
        node_args: tuple[str, ...] = (),
        server_args: tuple[str, ...] = (),
        durable_servers: bool = False,
    ) -> None:
        self.directory = directory
        self.durable_servers = durable_servers
        directory.mkdir(parents=True, exist_ok=True)
        self.ping_interval = ping_interval
        self.dead_pings = dead_pings
        self.admin = admin
        self.node_args = node_args
        self.server_args = server_args
        self.servers: list[NodeProcess] = []
        self.proxies: list[TcpProxy] = []
        self.clients: list[pbkv.Client] = []
        port = free_port()
        args = ["--listen", "127.0.0.1:{port}", "--ping-interval", str(ping_interval)]
        args += ["--dead-pings", str(dead_pings), *self._admin_args(), *node_args]
        if data_dir:
            args += ["--data-dir", str(directory / "viewserver-data")]
        else:
            args += ["--no-data-dir"]
        self.viewserver = NodeProcess("viewserver", args, port, directory / "viewserver.log")

    @property
    def dead_interval(self) -> float:
        """Seconds of silence after which the view service declares a server dead."""
        return self.ping_interval * self.dead_pings

    @property
    def address(self) -> str:
        """The view service's address (what clients are given)."""
        return self.viewserver.address

    def _admin_args(self) -> list[str]:
        return ["--admin-port", "0"] if self.admin else []

    def start(self, servers: int = 2, **server_options: Any) -> Cluster:
        """Start the view service, then ``servers`` servers at once; wait until the view is
        stable with all of them known. ``servers`` is then ordered primary, backup, idle."""
        self.viewserver.start()
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

    def add_server(
        self, proxied: bool = False, viewserver_proxied: bool = False, wait: bool = True
    ) -> NodeProcess:
        """Start one more server; ``proxied``: its name is a ``TcpProxy`` in front of it (all
        traffic to it passes the proxy); ``viewserver_proxied``: it reaches the view service
        through its own proxy. ``wait``: until it listens, the view service knows it and the
        view is stable (else it is only spawned)."""
        index = len(self.servers) + 1
        port = free_port()
        node = NodeProcess("server", [], port, self.directory / f"server{index}.log")
        args = ["--listen", "127.0.0.1:{port}", "--ping-interval", str(self.ping_interval)]
        if proxied:
            node.proxy = self.proxy(node.address)
            args += ["--advertise", node.proxy.address]
        viewserver = self.address
        if viewserver_proxied:
            node.viewserver_proxy = self.proxy(self.address)
            viewserver = node.viewserver_proxy.address
        node.args = [*args, "--viewserver", viewserver, *self._admin_args(), *self.node_args]
        node.args += self.server_args
        if self.durable_servers:
            node.args += ["--data-dir", str(self.directory / f"server{index}-data")]
        self.servers.append(node.spawn())
        if not wait:
            return node
        node.wait_listening()
        self.wait_for(lambda s: any(info.name == node.name for info in s.servers), "server known")
        self.wait_stable()
        return node

    def proxy(self, target: str, **options: Any) -> TcpProxy:
        proxy = TcpProxy(target, **options).start()
        self.proxies.append(proxy)
        return proxy

    # --- observing ---------------------------------------------------------------------------

    def status(self, timeout: float = 2.0) -> ViewServiceStatus:
        with Channel(self.address, MESSAGES, timeout) as channel:
            reply = channel.call(StatusRequest())
        assert isinstance(reply, ViewServiceStatus), reply
        return reply

    def view(self) -> View:
        return self.status().view

    def wait_for(
        self,
        predicate: Callable[[ViewServiceStatus], bool],
        what: str,
        timeout: float = VIEW_TIMEOUT_S,
    ) -> ViewServiceStatus:
        """Poll the view service until ``predicate(status)``; fail with ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        status: ViewServiceStatus | None = None
        while time.monotonic() < deadline:
            try:
                status = self.status()
            except OSError:
                status = None
            if status is not None and predicate(status):
                return status
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; last status: {status}")

    def wait_stable(self, timeout: float = VIEW_TIMEOUT_S) -> View:
        """Until the view is acknowledged and, if a live idle server could be backup, has a
        backup that completed its state transfer."""

        def stable(status: ViewServiceStatus) -> bool:
            view = status.view
            live = {info.name for info in status.servers if info.alive}
            if not status.acknowledged or view.primary not in live:
                return False
            if view.backup is None:
                return not live - {view.primary}
            return view.backup in live  # acknowledged with a backup: the backup is synced (P4)

        return self.wait_for(stable, "a stable view", timeout).view

    def wait_for_primary(self, name: str, timeout: float = VIEW_TIMEOUT_S) -> View:
        status = self.wait_for(
            lambda s: s.view.primary == name and s.acknowledged, f"primary {name}", timeout
        )
        return status.view

    def node(self, name: str | None) -> NodeProcess:
        """The server process whose name (in views) is ``name``."""
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def primary(self) -> NodeProcess:
        return self.node(self.view().primary)

    def backup(self) -> NodeProcess:
        return self.node(self.view().backup)

    def dump(self, node: NodeProcess | str) -> dict[str, Any]:
        """``pbkv dump --json`` of a server, read from its real address (not via a proxy)."""
        address = node.address if isinstance(node, NodeProcess) else self.node(node).address
        return dump_server(address, 5.0)

    def client(self, timeout: float = 15.0) -> pbkv.Client:
        client = pbkv.Client(self.address, timeout=timeout)
        self.clients.append(client)
        return client

    def logs(self, tail: int = 60) -> str:
        parts = []
        for node in [self.viewserver, *self.servers]:
            lines = node.log_text().splitlines()[-tail:]
            parts.append(f"===== {node.log_path.name} ({node.name})\n" + "\n".join(lines))
        return "\n".join(parts)

    def fatal_lines(self) -> list[str]:
        """Log lines of events that mean a bug (an exception escaped a core handler)."""
        nodes = [self.viewserver, *self.servers]
        return [
            line
            for node in nodes
            for line in node.log_text().splitlines()
            if " fatal " in line or "Traceback" in line
        ]

    def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.close()
        for node in [*self.servers, self.viewserver]:
            node.cont()
            node.kill()
        for proxy in self.proxies:
            proxy.close()


PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_data_directory_left_in_the_project() -> Iterator[None]:
    """A view service started without ``--data-dir`` or ``--no-data-dir`` keeps its view in
    ``pbkv-viewserver-HOST-PORT.data`` in its working directory: a test that forgets the flag
    leaves one in the checkout on every run. Fails the test during which one appeared (or one
    running beside it, under ``-n 2``)."""
    before = set(PROJECT_ROOT.glob("pbkv-*.data"))
    yield
    left = sorted(path.name for path in set(PROJECT_ROOT.glob("pbkv-*.data")) - before)
    assert not left, f"a node wrote its data directory into the project: {left}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@contextlib.contextmanager
def managed_clusters(
    directory: Path, failed: Callable[[], bool]
) -> Iterator[Callable[..., Cluster]]:
    """Yields ``make(servers=2, **options)``; kills every cluster made on exit, prints their
    logs when ``failed()``, and fails if any process logged a fatal error."""
    clusters: list[Cluster] = []

    def make(servers: int = 2, **options: Any) -> Cluster:
        server_options = {
            k: options.pop(k) for k in ("proxied", "viewserver_proxied") if k in options
        }
        cluster = Cluster(directory / f"cluster{len(clusters)}", **options)
        clusters.append(cluster)
        return cluster.start(servers, **server_options)

    try:
        yield make
    finally:
        fatal: list[str] = []
        for cluster in clusters:
            cluster.close()
            fatal += cluster.fatal_lines()
            if failed():
                print(cluster.logs())
    assert not fatal, "a process hit a fatal error:\n" + "\n".join(fatal)


@pytest.fixture
def cluster_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Cluster]]:
    """``make(servers=2, data_dir=False, admin=False, ping_interval=..., dead_pings=...,
    node_args=(), server_args=(), proxied=False, viewserver_proxied=False)`` -> a started
    ``Cluster`` for this test (``node_args``: extra flags of every node process,
    ``server_args``: of the servers only)."""

    def failed() -> bool:
        report = getattr(request.node, "rep_call", None)
        return report is not None and bool(report.failed)

    with managed_clusters(tmp_path, failed) as make:
        yield make


@pytest.fixture
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """A started cluster: view service, primary and synced backup."""
    return cluster_factory()


@pytest.fixture(scope="module")
def shared_cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """One two-server cluster for a whole module, for tests that do not break it (use keys
    of your own)."""
    failures = request.session.testsfailed
    directory = tmp_path_factory.mktemp("shared")
    with managed_clusters(directory, lambda: request.session.testsfailed > failures) as make:
        yield make()


# --- raw protocol access ---------------------------------------------------------------------


def raw_request(
    address: str,
    op: Operation,
    client_id: str = "raw-test-client",
    seq: int = 0,
    timeout: float = 1.0,
) -> Reply | None:
    """Send one ``Request`` straight to ``address``; the ``Reply``, or None if none came."""
    try:
        with Channel(address, MESSAGES, timeout) as channel:
            reply: AnyMessage = channel.call(Request(client_id, seq, 0, op))
    except OSError:
        return None
    assert isinstance(reply, Reply), reply
    return reply


# --- TCP proxy -------------------------------------------------------------------------------


class TcpProxy:
    """Listens on 127.0.0.1 and forwards to ``target`` frame by frame, in a background thread.

    ``drop_requests`` / ``drop_replies``: probability of silently dropping each whole frame
    going to / coming from the target (seeded). ``cut()`` drops everything both ways (open
    connections stay open: a partition, not a crash) until ``heal()``."""

    def __init__(
        self, target: str, drop_requests: float = 0.0, drop_replies: float = 0.0, seed: int = 0
    ) -> None:
        self.target = target
        self.drop_requests = drop_requests
        self.drop_replies = drop_replies
        self.rng = random.Random(seed)
        self.is_cut = False
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dropped = 0
        self.forwarded = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    def cut(self) -> None:
        self.is_cut = True

    def heal(self) -> None:
        self.is_cut = False

    def set_drop(self, requests: float, replies: float) -> None:
        self.drop_requests, self.drop_replies = requests, replies

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target.rsplit(":", 1)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pump(reader, upstream_writer, lambda: self.drop_requests),
            self._pump(upstream_reader, writer, lambda: self.drop_replies),
            return_exceptions=True,
        )

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        drop: Callable[[], float],
    ) -> None:
        try:
            while True:
                header = await reader.readexactly(FRAME_HEADER.size)
                (length,) = FRAME_HEADER.unpack(header)
                payload = await reader.readexactly(length)
                handshake = payload.startswith(MAGIC)  # dropped only by a cut, never at random
                if self.is_cut or (not handshake and self.rng.random() < drop()):
                    self.dropped += 1
                    continue
                self.forwarded += 1
                writer.write(header + payload)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
