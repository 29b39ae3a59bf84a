"""The host of one member of a view service replicated on etcd (``pbkv viewserver --etcd``).

Theory of operation. The process is a follower until ``Leadership`` (``runtime/etcd.py``) wins
the election; a follower feeds nothing to a core and answers every view-service request with
``NotLeader(leader, reason)`` so servers and clients move to the leader (docs/protocol.md §13),
except a client's ``GetView`` while no member leads (etcd lost its quorum): that one gets the
newest view the member read from etcd, so new clients still find the primary of the view that
keeps serving (a view is authoritative for its number, V1; a stale one costs a retry).
On winning, the host builds a fresh ``ViewService`` from the view etcd holds, exactly as a view
service restarted with its data directory does (``ViewService.restore``: the members of the
restored view get a full dead interval to ping before they are judged, V9), and leads. Its
core's clock (ticks) starts only at the first ping it hears (at most ``FIRST_PING_WAIT_S_MAX``
later): servers that were talking to a paused old leader need about a second to notice and find
the new one, and must not be declared dead for the time it took them to find it.

A leader executes the core's effects in order, as ``NodeHost`` does, except ``PersistView``:
that one is a fenced etcd transaction (V13), which takes a round trip, so the effects after it
wait, and so does every input (messages, at most ``HELD_MESSAGES_MAX``; ticks, counted) until
the write is acknowledged. No server hears of a view etcd does not hold (V9). A write that is
fenced, or not acknowledged before the lease deadline, ends leadership: the core is dropped
with everything it decided and not written, and the process is a follower again. A leader
also steps down when its lease deadline passes (checked on every tick and every input), before
etcd can expire its lease and elect another (the timing argument is in docs/design.md).

A view in etcd of another format version (a newer release wrote it) is refused, never restored
nor overwritten: ``Leadership`` hands the leader key back and ``on_refused`` stops the process,
which then exits with that one line, as a view service refuses such a view file at start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import deque
from collections.abc import Callable
from typing import Final

from pbkv.core.effects import Effect, PersistView
from pbkv.core.messages import AnyMessage, GetView, NotLeader, Ping, StatusRequest, ViewReply
from pbkv.core.view_service import ViewService
from pbkv.runtime.config import EXIT_USAGE, ConfigError, NodeOptions
from pbkv.runtime.etcd import EtcdOptions, Leadership
from pbkv.runtime.host import Network
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.loop import run
from pbkv.runtime.node import NodeHost, serve_host

HELD_MESSAGES_MAX: Final = 10_000
HELD_TICKS_MAX: Final = 1_000
FIRST_PING_WAIT_S_MAX: Final = 3.0
"""A new leader's clock starts at the first ping it hears, or after this long without one."""
VIEW_SERVICE_REQUESTS: Final = (Ping, GetView, StatusRequest)


class ReplicatedViewHost(NodeHost):
    """A view service process that leads only while it holds the etcd leadership."""

    def __init__(
        self,
        core: ViewService,
        network: Network,
        logger: EventLogger,
        build: Callable[[PersistView | None], ViewService],
    ) -> None:
        super().__init__("viewserver", core, network, logger, None)
        self.build = build
        self.leadership: Leadership | None = None
        self.leading = False
        self.term = 0
        self.writing = False
        self.deferred: list[Effect] = []
        self.held: deque[tuple[str, AnyMessage]] = deque()
        self.held_ticks = 0
        self.writes_dropped_inputs = 0
        self.writes: set[asyncio.Task[None]] = set()
        self.clock_started = False
        self.elected_at = 0.0
        self.refused = ""
        """Why the process stops: the view in etcd is of another format version."""
        logger.view_number = lambda: self.core.view.number

    # --- leadership --------------------------------------------------------------------------

    def on_elected(self, saved: PersistView | None, token: int) -> None:
        self.term += 1
        self.core = self.build(saved)
        self.leading = True
        self.clock_started = False
        self.elected_at = self.loop.time()
        self.writing = False
        self.deferred, self.held_ticks = [], 0
        self.held.clear()
        view = saved.view.describe() if saved is not None else "none"
        self.logger.event("leading", token=token, restored=view)

    def on_lost(self, reason: str) -> None:
        if not self.leading:
            return
        self.term += 1
        self.leading = False
        self.writing = False
        self.deferred, self.held_ticks = [], 0
        self.held.clear()
        self.core = self.build(None)
        self.logger.event("stepped_down", reason=reason)

    def on_refused(self, reason: str) -> None:
        """The view in etcd is of another format version: stop (exit status 2, ``reason``)."""
        self.refused = reason
        self.failed = True
        self.exit_code = EXIT_USAGE
        self.stopped.set()

    def still_leading(self) -> bool:
        """Whether to decide now; steps down first when the lease deadline has passed."""
        leadership = self.leadership
        if not self.leading or leadership is None:
            return False
        if not leadership.leading(self.loop.time()):
            leadership.lose("lease deadline passed")
            self.on_lost("lease deadline passed")
            return False
        return True

    # --- inputs ------------------------------------------------------------------------------

    def receive(self, source: str, messages: list[AnyMessage]) -> None:
        if self.failed:
            return
        if not self.still_leading():
            self.redirect(source, messages)
            return
        if not self.clock_started and any(type(message) is Ping for message in messages):
            self.clock_started = True
        if self.writing:
            for message in messages:
                if len(self.held) >= HELD_MESSAGES_MAX:
                    self.writes_dropped_inputs += 1
                    continue
                self.held.append((source, message))
            return
        super().receive(source, messages)

    def redirect(self, source: str, messages: list[AnyMessage]) -> None:
        leadership = self.leadership
        leader = reason = ""
        if leadership is not None:
            leader = leadership.leader if leadership.leader != self.core.name else ""
            reason = leadership.problem
        known = leadership.known_view if leadership is not None else None
        for message in messages:
            if type(message) is GetView and not leader and known is not None:
                self.network.send(source, ViewReply(known))  # no leader: the last view known
            elif isinstance(message, VIEW_SERVICE_REQUESTS):
                self.network.send(source, NotLeader(leader, reason))

    def tick(self, count: int) -> None:
        if self.failed or not self.still_leading():
            return
        if not self.clock_started:
            if self.loop.time() - self.elected_at < FIRST_PING_WAIT_S_MAX:
                return
            self.clock_started = True
        if self.writing:
            self.held_ticks = min(HELD_TICKS_MAX, self.held_ticks + count)
            return
        super().tick(count)

    # --- effects -----------------------------------------------------------------------------

    def execute(self, effects: list[Effect]) -> None:
        for index, effect in enumerate(effects):
            if type(effect) is PersistView:
                super().execute(effects[:index])
                self.deferred = effects[index + 1 :]
                self.writing = True
                task = self.loop.create_task(self.write(effect, self.term))
                self.writes.add(task)
                task.add_done_callback(self.writes.discard)
                return
        super().execute(effects)

    async def write(self, state: PersistView, term: int) -> None:
        leadership = self.leadership
        assert leadership is not None
        written = await leadership.write_view(state)
        if term != self.term:
            return  # stepped down (and maybe elected again) meanwhile
        if not written:
            self.on_lost("view not written")
            return
        self.writing = False
        self.resume()

    def resume(self) -> None:
        """Run what waited for a write, in order, until done or the next write."""
        while not self.writing and self.still_leading():
            if self.deferred:
                effects, self.deferred = self.deferred, []
                self.execute(effects)
            elif self.held_ticks:
                count, self.held_ticks = self.held_ticks, 0
                super().tick(count)
            elif self.held:
                source, message = self.held.popleft()
                super().receive(source, [message])
            else:
                return

    # --- life cycle --------------------------------------------------------------------------

    async def run_until_stopped(self) -> int:
        await self.stopped.wait()
        if self.leadership is not None:
            await self.leadership.stop()
        return await super().run_until_stopped()

    def role(self) -> str:
        return "viewservice" if self.leading else "viewservice-follower"


def run_replicated_viewserver(options: NodeOptions, etcd: EtcdOptions, backups: int = 1) -> int:
    """Run one member of a view service replicated on etcd until SIGTERM/SIGINT; returns the
    exit status. A clean stop revokes the lease, so another member leads at once. ``backups``:
    the K of ``ViewServiceConfig.backups_max``. Raises ``ConfigError`` (one line) when it won
    and found a view of another format version in etcd."""
    config = dataclasses.replace(options.timing.view_service_config(), backups_max=backups)
    hosts: list[ReplicatedViewHost] = []

    def make_host(name: str, network: Network, logger: EventLogger) -> NodeHost:
        def build(saved: PersistView | None) -> ViewService:
            return ViewService.restore(name, config, saved, random.SystemRandom())

        host = ReplicatedViewHost(build(None), network, logger, build)
        host.leadership = Leadership(
            name, etcd, logger, host.on_elected, host.on_lost, host.on_refused
        )
        if etcd.reload_from is not None:
            host.reload_hooks.append(host.leadership.prepare_reload)
        hosts.append(host)
        return host

    def started(node: NodeHost) -> None:
        del node
        host = hosts[0]
        assert host.leadership is not None
        host.logger.event(
            "etcd_member",
            endpoints=",".join(etcd.endpoints),
            prefix=etcd.prefix,
            lease_ttl_s=etcd.lease_ttl_s,
            request_timeout_s=etcd.request_timeout_s,
            tls="off" if etcd.tls is None else "on",
            client_certificate="no" if etcd.tls is None or etcd.tls.cert is None else "yes",
            user="-" if etcd.auth is None else etcd.auth.user,
        )
        host.leadership.start()

    status = run(serve_host(options, make_host, started))
    if hosts and hosts[0].refused:
        raise ConfigError(hosts[0].refused)
    return status
