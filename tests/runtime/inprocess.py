"""Run view service and server hosts inside the test's own event loop (fast, no subprocesses)."""

from __future__ import annotations

import asyncio
import random
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pbkv.core.kv_store import Limits
from pbkv.core.replica import Replica
from pbkv.core.view_service import ViewService
from pbkv.runtime.config import NodeOptions, Timing
from pbkv.runtime.node import Core, NodeHost, serve
from pbkv.runtime.persist import ViewStore

FAST = Timing(ping_interval_s=0.02, dead_pings=5)
# For tests that break nothing: a 1 s dead interval, so a loaded CI machine stalling the one
# shared loop for 0.1 s does not drop a server and change the view under the test.
STEADY = Timing(ping_interval_s=0.02, dead_pings=50)


async def scrape_metrics(node: NodeHost) -> str:
    """The node's ``/metrics`` text, read over HTTP (in a thread: the node runs on this loop)."""
    assert node.metrics is not None and node.metrics.http is not None
    url = f"http://127.0.0.1:{node.metrics.http.port}/metrics"

    def read() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    return await asyncio.to_thread(read)


@dataclass
class Running:
    node: NodeHost
    task: asyncio.Task[int]

    @property
    def name(self) -> str:
        return self.node.core.name

    async def stop(self) -> int:
        self.node.request_stop()
        return await self.task


async def start_node(
    kind: str,
    options: NodeOptions,
    view_service: str | None = None,
    limits: Limits | None = None,
    store: ViewStore | None = None,
) -> Running:
    """Start a host in this loop; returns once it is listening."""
    started: asyncio.Future[NodeHost] = asyncio.get_running_loop().create_future()

    def build(name: str) -> Core:
        if view_service is None:
            return ViewService(name, options.timing.view_service_config())
        config = options.timing.replica_config(limits or Limits())
        return Replica(name, view_service, random.Random(), config)

    coroutine = serve(kind, options, build, view_service, store, started.set_result, False)
    task = asyncio.create_task(coroutine)
    waiting: list[asyncio.Future[Any]] = [started, task]
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
        raise AssertionError("the node stopped at once")
    return Running(started.result(), task)


@dataclass
class LocalCluster:
    viewserver: Running
    servers: list[Running] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.viewserver.name

    @property
    def view_service(self) -> ViewService:
        """The view service's core (read its view and acknowledgement directly)."""
        core = self.viewserver.node.core
        assert isinstance(core, ViewService)
        return core

    async def in_view_order(self, timeout: float = 10.0) -> list[Running]:
        """The servers as the view service's acknowledged view places them: primary, backups,
        idle (waits for the acknowledgement, so the primary knows its view).

        Tests that break a role ask this rather than assume ``servers[0]`` is primary: with a
        short dead interval a loaded machine may already have changed the view once."""
        core = self.view_service
        async with asyncio.timeout(timeout):
            while not core.acknowledged:
                await asyncio.sleep(0.01)
        ranks = {name: rank for rank, name in enumerate(core.view.members())}
        return sorted(self.servers, key=lambda running: ranks.get(running.name, len(ranks)))

    async def wait_view(self, servers: int, timeout: float = 10.0) -> None:
        """Until the view service's view is acknowledged and holds ``servers`` members."""
        core = self.view_service
        async with asyncio.timeout(timeout):
            while not (core.acknowledged and len(core.view.members()) == servers):
                await asyncio.sleep(0.01)


@asynccontextmanager
async def local_cluster(
    servers: int = 2,
    timing: Timing = FAST,
    limits: Limits | None = None,
    admin: bool = False,
    metrics: bool = False,
) -> AsyncIterator[LocalCluster]:
    """A view service and ``servers`` servers in this loop, with a stable view; ``admin`` and
    ``metrics`` open those ports (on any free port) on every node."""
    options = NodeOptions(
        listen="127.0.0.1:0",
        timing=timing,
        admin_port=0 if admin else None,
        metrics_port=0 if metrics else None,
    )
    cluster = LocalCluster(await start_node("viewserver", options))
    try:
        for count in range(1, servers + 1):
            running = await start_node("server", options, cluster.address, limits)
            cluster.servers.append(running)
            await cluster.wait_view(min(count, 2))
        yield cluster
    finally:
        for running in [*cluster.servers, cluster.viewserver]:
            if not running.task.done():
                await running.stop()
