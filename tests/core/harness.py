"""In-process wiring for the sans-I/O core: real state machines, no mocks, delivery by hand.

``Wire`` connects any number of core nodes (view service, replicas, client sessions). Every
``Send`` effect becomes an in-flight ``Envelope``; a test delivers, drops, duplicates or reorders
envelopes explicitly, or lets ``settle`` deliver them first-in first-out. ``Cluster`` builds a view
service, replicas and clients on a ``Wire`` with small timers, the way etcd-raft's test network
and h11's two-ended tests do. This is deliberately tiny: the real simulator is ``pbkv.sim``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from pbkv.core.client_session import ClientConfig, ClientSession
from pbkv.core.durable import DurableRecord, RecoveredState, Snapshot
from pbkv.core.effects import (
    Deliver,
    Effect,
    Log,
    Outbox,
    Persist,
    PersistSnapshot,
    PersistView,
    Send,
)
from pbkv.core.kv_store import Limits
from pbkv.core.messages import AnyMessage, Operation, StateTransfer, StateTransferReply, View
from pbkv.core.replica import Replica, ReplicaConfig
from pbkv.core.view_service import ViewService, ViewServiceConfig

M = TypeVar("M")

VIEW_SERVICE = "vs"

# Small timers keep the scenarios short: a server is dead after 10 silent ticks, pings every 2.
FAST_VIEW_SERVICE = ViewServiceConfig(
    dead_after_ticks=10,
    servers_max=16,
    forget_after_ticks=200,
    restart_quiet_ticks=4,
    first_view_grace_ticks=0,
)
FAST_REPLICA = ReplicaConfig(ping_interval_ticks=2, forward_retry_ticks=6, transfer_retry_ticks=6)
FAST_CLIENT = ClientConfig(
    retry_initial_ticks=4, retry_max_ticks=12, timeout_ticks=2000, view_query_retry_ticks=4
)


def replay_disk(disk: list[Persist | PersistSnapshot], limits: Limits) -> RecoveredState:
    """What a replica recovers from these durable effects: the last snapshot, then records."""
    snapshot: Snapshot | None = None
    records: list[DurableRecord] = []
    for effect in disk:
        if isinstance(effect, PersistSnapshot):
            snapshot, records = effect.snapshot, []
        else:
            records += effect.records
    return RecoveredState.replay(snapshot, records, limits)


class Node(Protocol):
    def on_message(self, source: str, message: AnyMessage, out: Outbox) -> None: ...

    def on_tick(self, out: Outbox) -> None: ...


def sent(effects: Iterable[Effect], kind: type[M], target: str | None = None) -> list[M]:
    """The messages of type ``kind`` among ``effects``' sends (optionally only to ``target``)."""
    return [
        effect.message
        for effect in effects
        if isinstance(effect, Send)
        and isinstance(effect.message, kind)
        and (target is None or effect.target == target)
    ]


def sends(effects: Iterable[Effect]) -> list[Send]:
    return [effect for effect in effects if isinstance(effect, Send)]


def delivered(effects: Iterable[Effect]) -> list[Deliver]:
    return [effect for effect in effects if isinstance(effect, Deliver)]


def logged(effects: Iterable[Effect], event: str) -> list[Log]:
    return [effect for effect in effects if isinstance(effect, Log) and effect.event == event]


@dataclass(frozen=True, slots=True)
class Envelope:
    source: str
    target: str
    message: AnyMessage


def everything(envelope: Envelope) -> bool:
    return True


@dataclass(slots=True)
class Faults:
    """What ``settle`` does to the envelopes ``applies`` selects: drop some, duplicate some."""

    rng: random.Random
    drop: float = 0.0
    duplicate: float = 0.0
    applies: Callable[[Envelope], bool] = everything


class Recorder:
    """A node that only records what it receives (a client or view service stand-in)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, AnyMessage]] = []

    def on_message(self, source: str, message: AnyMessage, out: Outbox) -> None:
        self.received.append((source, message))

    def on_tick(self, out: Outbox) -> None:
        pass

    def of(self, kind: type[M]) -> list[M]:
        return [message for _, message in self.received if isinstance(message, kind)]


@dataclass(slots=True)
class Wire:
    """Nodes by name and the messages travelling between them."""

    nodes: dict[str, Node] = field(default_factory=dict)
    in_flight: list[Envelope] = field(default_factory=list)
    history: list[Envelope] = field(default_factory=list)
    results: dict[str, list[Deliver]] = field(default_factory=dict)
    persisted: list[PersistView] = field(default_factory=list)
    disks: dict[str, list[Persist | PersistSnapshot]] = field(default_factory=dict)
    """Each replica's durable effects in order (what its disk would hold, every one synced)."""
    logs: list[tuple[str, Log]] = field(default_factory=list)
    cuts: set[tuple[str, str]] = field(default_factory=set)
    faults: Faults | None = None

    def add(self, name: str, node: Node) -> None:
        self.nodes[name] = node

    def remove(self, name: str) -> None:
        """Crash ``name``: it stops, and whatever is addressed to it is lost."""
        self.nodes.pop(name, None)
        self.in_flight = [e for e in self.in_flight if e.target != name]

    def cut(self, a: str, *others: str) -> None:
        """Lose everything between ``a`` and each of ``others`` (both ways) until healed."""
        for b in others:
            self.cuts |= {(a, b), (b, a)}

    def isolate(self, name: str) -> None:
        self.cut(name, *(other for other in self.nodes if other != name))

    def heal(self) -> None:
        self.cuts.clear()

    def collect(self, name: str, out: Outbox) -> list[Effect]:
        effects = out.take()
        for effect in effects:
            match effect:
                case Send(target, message):
                    self.in_flight.append(Envelope(name, target, message))
                case Deliver():
                    self.results.setdefault(name, []).append(effect)
                case PersistView():
                    self.persisted.append(effect)
                case Persist() | PersistSnapshot():
                    self.disks.setdefault(name, []).append(effect)
                case Log():
                    self.logs.append((name, effect))
        return effects

    # --- delivery ----------------------------------------------------------------------------

    def send(self, source: str, target: str, message: AnyMessage) -> list[Effect]:
        """Hand ``message`` to ``target`` now, as if ``source`` had sent it."""
        envelope = Envelope(source, target, message)
        self.in_flight.append(envelope)
        return self.deliver(envelope)

    def deliver(self, envelope: Envelope) -> list[Effect]:
        """Deliver one envelope (it leaves the network); a crashed target loses it."""
        self.in_flight.remove(envelope)
        node = self.nodes.get(envelope.target)
        if node is None or (envelope.source, envelope.target) in self.cuts:
            return []
        self.history.append(envelope)
        out = Outbox()
        node.on_message(envelope.source, envelope.message, out)
        return self.collect(envelope.target, out)

    def pending(
        self,
        kind: type[object] = object,
        target: str | None = None,
        source: str | None = None,
    ) -> list[Envelope]:
        return [
            e
            for e in self.in_flight
            if isinstance(e.message, kind)
            and (target is None or e.target == target)
            and (source is None or e.source == source)
        ]

    def deliver_where(
        self, kind: type[object] = object, target: str | None = None, source: str | None = None
    ) -> int:
        """Deliver every envelope matching now (not those their delivery produces)."""
        matching = self.pending(kind, target, source)
        for envelope in matching:
            self.deliver(envelope)
        return len(matching)

    def pass_probe(self, target: str | None = None) -> None:
        """Deliver the pending transfer probe (chunk 0) and the backup's answer to it, so the
        chunks that carry state are next in flight (P10)."""
        probe, *_ = [
            e
            for e in self.pending(StateTransfer, target)
            if isinstance(e.message, StateTransfer) and e.message.probe
        ]
        self.deliver(probe)
        answer, *_ = [
            e
            for e in self.pending(StateTransferReply, source=probe.target)
            if isinstance(e.message, StateTransferReply) and e.message.chunk_index == 0
        ]
        self.deliver(answer)

    def drop_where(
        self, kind: type[object] = object, target: str | None = None, source: str | None = None
    ) -> int:
        matching = self.pending(kind, target, source)
        for envelope in matching:
            self.in_flight.remove(envelope)
        return len(matching)

    def settle(
        self, steps_max: int = 100_000, keep: Callable[[Envelope], bool] | None = None
    ) -> None:
        """Deliver first-in first-out until nothing is in flight; ``keep`` holds envelopes back."""
        faults = self.faults
        for _ in range(steps_max):
            ready = [e for e in self.in_flight if keep is None or not keep(e)]
            if not ready:
                return
            envelope = ready[0]
            if faults is not None and faults.applies(envelope):
                draw = faults.rng.random()
                if draw < faults.drop:
                    self.in_flight.remove(envelope)
                    continue
                if draw < faults.drop + faults.duplicate:
                    self.in_flight.append(envelope)  # a copy arrives again, later
            self.deliver(envelope)
        raise AssertionError("the network did not settle")

    # --- time and clients --------------------------------------------------------------------

    def tick(self, names: Iterable[str] | None = None) -> None:
        for name in list(self.nodes) if names is None else list(names):
            node = self.nodes.get(name)
            if node is not None:
                out = Outbox()
                node.on_tick(out)
                self.collect(name, out)

    def submit(self, client: str, op: Operation, timeout_ticks: int | None = None) -> int:
        session = self.nodes[client]
        assert isinstance(session, ClientSession)
        out = Outbox()
        seq = session.submit(op, out, timeout_ticks)
        self.collect(client, out)
        return seq

    def result(self, client: str, seq: int) -> Deliver | None:
        found = [d for d in self.results.get(client, []) if d.seq == seq]
        assert len(found) <= 1, f"{client} got {len(found)} results for seq {seq}"
        return found[0] if found else None


class Cluster:
    """A view service, replicas and client sessions on one ``Wire``, with fast timers."""

    def __init__(
        self,
        seed: int = 0,
        view_service_config: ViewServiceConfig = FAST_VIEW_SERVICE,
        replica_config: ReplicaConfig = FAST_REPLICA,
        client_config: ClientConfig = FAST_CLIENT,
    ) -> None:
        self.seed = seed
        self.view_service_config = view_service_config
        self.replica_config = replica_config
        self.client_config = client_config
        self.wire = Wire()
        self.view_service = ViewService(VIEW_SERVICE, view_service_config)
        self.wire.add(VIEW_SERVICE, self.view_service)
        self.replicas: dict[str, Replica] = {}
        self.clients: dict[str, ClientSession] = {}
        self.starts = 0

    @property
    def view(self) -> View:
        return self.view_service.view

    def start(self, name: str) -> Replica:
        """Start (or restart, with empty state and a new incarnation) server ``name``."""
        self.starts += 1
        rng = random.Random(f"{self.seed}/{name}/{self.starts}")
        replica = Replica(name, VIEW_SERVICE, rng, self.replica_config)
        self.replicas[name] = replica
        self.wire.remove(name)
        self.wire.add(name, replica)
        return replica

    def crash(self, name: str) -> None:
        self.wire.remove(name)

    def recover(self, name: str) -> Replica:
        """Restart ``name`` from its disk (a new process: new incarnation, recovered state)."""
        self.starts += 1
        rng = random.Random(f"{self.seed}/{name}/{self.starts}")
        state = replay_disk(self.wire.disks.get(name, []), self.replica_config.limits)
        replica = Replica(name, VIEW_SERVICE, rng, self.replica_config, state)
        self.replicas[name] = replica
        self.wire.remove(name)
        self.wire.add(name, replica)
        return replica

    def restart_view_service(self) -> ViewService:
        """A new view service process resuming from the last persisted view (V9)."""
        last = self.wire.persisted[-1] if self.wire.persisted else None
        self.view_service = ViewService.restore(VIEW_SERVICE, self.view_service_config, last)
        self.wire.remove(VIEW_SERVICE)
        self.wire.add(VIEW_SERVICE, self.view_service)
        return self.view_service

    def client(self, name: str) -> ClientSession:
        session = ClientSession(
            VIEW_SERVICE, random.Random(f"{self.seed}/{name}"), self.client_config
        )
        self.clients[name] = session
        self.wire.add(name, session)
        return session

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.wire.tick()
            self.wire.settle()

    def run_until(self, condition: Callable[[], bool], ticks_max: int = 500) -> int:
        """Tick until ``condition`` holds; return the ticks it took (fail after ``ticks_max``)."""
        self.wire.settle()
        for ticks in range(ticks_max + 1):
            if condition():
                return ticks
            self.wire.tick()
            self.wire.settle()
        raise AssertionError(f"condition not met within {ticks_max} ticks; {self.view.describe()}")

    def wait_for_view(self, primary: str, backup: str | None, ticks_max: int = 500) -> View:
        """Run until the view service's view is (primary, backup) and its primary serves it."""

        def ready() -> bool:
            view = self.view
            return (
                view.primary == primary
                and view.backup == backup
                and self.view_service.acknowledged
                and self.replicas[primary].view.number == view.number
            )

        self.run_until(ready, ticks_max)
        return self.view

    def call(self, client: str, op: Operation, ticks_max: int = 500) -> Deliver:
        """Submit ``op`` from ``client`` and run until its result arrives."""
        seq = self.wire.submit(client, op)
        self.run_until(lambda: self.wire.result(client, seq) is not None, ticks_max)
        result = self.wire.result(client, seq)
        assert result is not None
        return result
