"""The simulated world: the unchanged core state machines, a seeded network, and virtual time.

Theory of operation. The world hosts one view service (``vs``), replicas (``s1`` ..) and client
sessions (``c1`` ..), each a ``Node`` whose ``machine`` is the core object (None while crashed).
Time advances one tick at a time; inside a tick the order is fixed and documented:

1. ``before_tick`` hooks run (the fault injector crashes, restarts, pauses, resumes, cuts and
   heals here);
2. every message due at or before this tick is delivered, in ``(delivery tick, send sequence)``
   order; a message sent while handling one is due one tick later at the earliest, so this phase
   ends;
3. every running, unpaused node ticks (``on_tick``) in creation order: the view service, the
   replicas, the clients, then any node added later (``add_node``);
4. ``after_tick`` hooks run (the workload submits new operations here).

After every handler call the world executes the node's effects in order: ``Send`` goes to the
network (encoded with ``pbkv.wire``), ``Deliver`` closes the client's invocation in the history,
``Log`` goes to the trace, ``PersistView`` is written to the node's simulated disk, ``Persist``
and ``PersistSnapshot`` to the replica's (``disk.DiskHost``; a slow sync holds the node's later
sends until it completes); then the per-step safety checks of ``invariants.SafetyMonitor`` run.

Faults. *Crash* drops the machine, its timers and any messages queued for it while paused; a
message that arrives while a node is down is lost. *Restart* builds a new machine under the same
name from a fresh sub-seed: a replica or client starts empty with a new incarnation (a durable
replica recovers from what its disk kept, or refuses to start on a damaged log), the view
service starts from its disk (V9). A *whole-cluster crash* crashes the view service and every
server at once. A message still in flight to the old incarnation reaches the
new one, as a reconnecting TCP pool would. *Pause* freezes a node: it gets no ticks and its
incoming messages wait (up to ``paused_inbox_max``, beyond that they are lost) until *resume*,
when they are delivered in arrival order and the node carries on with its stale state. A
crashed *client* loses its session: its open operations become indeterminate in the history
(as at a timeout), and its restart is a new session with a new client id.

Limits. The network's codec carries ``frame_bytes_max`` of the cluster config: a message whose
encoding is larger is not sent, counted and traced (``oversized``), as the runtime does.
Adversary nodes (``adversary.py``) have no protocol state; hooks make them send raw requests with
oversized fields and forged protocol messages, under their own name.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from pbkv.core.client_session import ClientConfig, ClientSession
from pbkv.core.durable import RecoveredState
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
from pbkv.core.messages import (
    INITIAL_VIEW,
    AnyMessage,
    Append,
    Get,
    Operation,
    PingReply,
    Reply,
    StateTransfer,
    View,
)
from pbkv.core.replica import Replica, ReplicaConfig
from pbkv.core.sizes import text_bytes
from pbkv.core.view_service import ViewService
from pbkv.sim.adversary import Adversary
from pbkv.sim.disk import FOREIGN_CLUSTER_ID, DiskHost, DiskRefused
from pbkv.sim.history import History, Invocation
from pbkv.sim.invariants import InvariantViolation, SafetyMonitor
from pbkv.sim.network import Envelope, Network, decode
from pbkv.sim.nodes import (
    VIEW_SERVICE_NAME,
    ClusterConfig,
    Machine,
    Node,
    NodeKind,
    ReplicaFactory,
    ViewServiceFactory,
    WorldStats,
    default_view_service,
)
from pbkv.sim.sessions import EvictionWatch
from pbkv.sim.sizes import allowed_final_error, over_limit, sized_client_id
from pbkv.sim.trace import Trace
from pbkv.sim.world_faults import WorldFaults
from pbkv.wire import Codec

TIME_STEP: Final = 1e-6
VIEW_CARRIERS: Final = (PingReply, StateTransfer)
"""Messages that may move a replica to another view."""
Hook = Callable[["World"], None]


class World(WorldFaults):
    """A simulated cluster; drive it with ``tick``/``run``/``run_until`` and the fault methods."""

    def __init__(
        self,
        config: ClusterConfig,
        network: Network,
        node_rng: random.Random,
        trace: Trace | None = None,
        replica_factory: ReplicaFactory = Replica,
        view_service_factory: ViewServiceFactory = default_view_service,
        disk_rng: random.Random | None = None,
        operator_rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.network = network
        self.node_rng = node_rng
        self.trace = trace or Trace()
        self.tracing = self.trace.stream is not None
        self.replica_factory = replica_factory
        self.view_service_factory = view_service_factory
        self.monitor = SafetyMonitor()
        self.history = History()
        self.now = 0
        self.micro = 0
        self.nodes: dict[str, Node] = {}
        self.disk: dict[str, PersistView] = {}
        self.before_tick: list[Hook] = []
        self.after_tick: list[Hook] = []
        self.stats = WorldStats()
        self.limits = config.replica.limits
        self.evictions = EvictionWatch(self.limits.sessions_max)
        self.appends: dict[str, Invocation] = {}
        self.total_loss_tick: int | None = None
        self.disks: DiskHost | None = None
        self.operator_rng = operator_rng or random.Random(FOREIGN_CLUSTER_ID)
        """The operator's mistakes and choices only (other limits, a foreign disk, --repair):
        a run where the operator makes none draws everything else as before they existed."""
        if config.replica.durable:
            disk_rng = disk_rng or random.Random(node_rng.getrandbits(64))
            self.disks = DiskHost(config.disk, disk_rng, self.operator_rng)
        self.holding: set[str] = set()
        self.unsynced_loss_tick: int | None = None
        """When a replica whose disk lost unsynced writes was made primary (D1 permits losing
        them under ``everysec``/``no``)."""
        self.monitor.permits = self._n3_permits
        self.clock_rng = random.Random(node_rng.getrandbits(64)) if config.clock_drift > 0 else None
        self.lease_clocks = config.view_service.read_leases or self.clock_rng is not None
        """Replicas learn their lease clock from world time (pauses show as jumps, R4)."""
        self._out = Outbox()
        if network.codec.frame_bytes_max != config.frame_bytes_max:
            network.codec = Codec(AnyMessage, config.frame_bytes_max)
        network.on_oversized = self._oversized
        self.add_node(VIEW_SERVICE_NAME, "view_service")
        for index in range(1, config.servers + 1):
            self.add_node(f"s{index}", "replica")
        sizes = config.client_id_bytes
        for index in range(1, config.clients + 1):
            size = sizes[index - 1] if index <= len(sizes) else 0
            self.add_node(f"c{index}", "client", client_id_bytes=size)

    # --- membership ---------------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        kind: NodeKind,
        client_config: ClientConfig | None = None,
        client_id_bytes: int = 0,
    ) -> Node:
        """Create and start a node; a client may get its own ``client_config`` (the reader of
        the final reads never times out) and a client id of ``client_id_bytes`` bytes."""
        assert name not in self.nodes, f"duplicate node {name}"
        node = Node(name, kind, client_config=client_config, client_id_bytes=client_id_bytes)
        if self.clock_rng is not None:
            drift = self.config.clock_drift
            node.clock_rate = 1.0 + self.clock_rng.uniform(-drift, drift)
        self.nodes[name] = node
        self._start(node)
        return node

    def _start(self, node: Node) -> bool:
        """Start ``node``'s machine; False when a replica refuses to (a damaged log)."""
        rng = random.Random(self.node_rng.getrandbits(64))
        machine: Machine
        if node.kind == "view_service":
            saved = self.disk.get(node.name)
            settings = self.config.view_service
            machine = self.view_service_factory(node.name, settings, saved, rng)
        elif node.kind == "replica":
            started = self._replica(node, rng)
            if started is None:
                return False
            machine = started
        elif node.kind == "adversary":
            machine = Adversary(node.name)
        else:
            client_id = sized_client_id(rng, node.client_id_bytes)
            config = node.client_config or self.config.client
            machine = ClientSession(VIEW_SERVICE_NAME, rng, config, client_id=client_id)
            self.evictions.client_started(node.name, machine.client_id)
        node.machine = machine
        node.paused = False
        node.inbox.clear()
        node.starts += 1
        node.view_number = self._view_number(machine)
        return True

    def _replica(self, node: Node, rng: random.Random) -> Replica | None:
        """A new replica incarnation, recovered from its disk when it keeps one (as the runtime:
        decode, ``RecoveredState.replay``, ``Replica(..., recovered)``); None if it refuses."""
        config = self._replica_config(node)
        disks = self.disks
        if disks is None:
            return self.replica_factory(node.name, VIEW_SERVICE_NAME, rng, config)
        try:
            state, note = disks.start(node.name, config.limits, self.current_view().number)
        except DiskRefused as refusal:
            self.trace.fault(self.now, f"{node.name} refuses to start: {refusal}")
            return None
        self.trace.fault(self.now, f"{node.name} starts: {note}")
        node.lossy_start = state is not None and node.name in disks.lossy
        recovered: RecoveredState | None = state
        return self.replica_factory(node.name, VIEW_SERVICE_NAME, rng, config, recovered)

    def _replica_config(self, node: Node) -> ReplicaConfig:
        """The operator's mistake (V17, drawn): a server restarted with other size limits (half
        the value limit) than the cluster's."""
        config = self.config.replica
        rate = self.config.other_limits_rate
        serving = self.current_view().number > 0  # view 1 is formed under the cluster's limits
        if not (node.starts and rate and serving and self.operator_rng.random() < rate):
            return config
        limits = replace(config.limits, value_bytes_max=max(1, config.limits.value_bytes_max // 2))
        self.trace.fault(self.now, f"{node.name} starts with other limits ({limits})")
        return replace(config, limits=limits)

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    def servers(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.kind == "replica"]

    def clients(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.kind == "client"]

    @staticmethod
    def view_service_name() -> str:
        return VIEW_SERVICE_NAME

    def adversary(self, name: str) -> Adversary | None:
        machine = self.nodes[name].machine
        assert machine is None or isinstance(machine, Adversary)
        return machine

    def view_service(self) -> ViewService | None:
        machine = self.nodes[VIEW_SERVICE_NAME].machine
        assert machine is None or isinstance(machine, ViewService)
        return machine

    def replica(self, name: str) -> Replica | None:
        machine = self.nodes[name].machine
        assert machine is None or isinstance(machine, Replica)
        return machine

    def session(self, name: str) -> ClientSession:
        machine = self.nodes[name].machine
        assert isinstance(machine, ClientSession), f"{name} is not a running client"
        return machine

    def replicas(self) -> dict[str, Replica | None]:
        return {name: self.replica(name) for name in self.servers()}

    def current_view(self) -> View:
        """The view service's current view (its disk if it is down)."""
        machine = self.view_service()
        if machine is not None:
            return machine.view
        disk = self.disk.get(VIEW_SERVICE_NAME)
        return INITIAL_VIEW if disk is None else disk.view

    def is_up(self, name: str) -> bool:
        return self.nodes[name].machine is not None

    # --- clients ------------------------------------------------------------------------------

    def clock(self) -> float:
        """The history time of the last event (none consumed): what happens now is after every
        event recorded so far in this tick and before the next."""
        return self.now + self.micro * TIME_STEP

    def time(self) -> float:
        """History time: the tick plus a tiny step per history event, preserving order."""
        self.micro += 1
        return self.now + self.micro * TIME_STEP

    def submit(self, client: str, op: Operation) -> Invocation:
        """Start ``op`` on ``client``; returns its record (closed when the result arrives)."""
        node = self.nodes[client]
        session = self.session(client)
        out = self._out
        seq = session.next_seq
        record = self.history.invoke(client, seq, op, self.time())
        if type(op) is Append:
            self.appends[op.value] = record
        self.trace.client(self.now, "invoke", client, seq, repr(op))
        submitted = session.submit(op, out)
        assert submitted == seq
        self._after(node, session)
        return record

    # --- time ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance one tick, in the order given in the module docstring."""
        self.now += 1
        self.micro = 0
        self.stats.ticks += 1
        for hook in self.before_tick:
            hook(self)
        if self.disks is not None:
            self.disks.tick(self.now)
            if self.holding:
                self._release_held()
        self._deliver_due()
        out = self._out
        for node in self.nodes.values():
            machine = node.machine
            if machine is None or node.paused:
                continue
            if self.lease_clocks and not self._drifting_tick(node, machine):
                continue
            machine.on_tick(out)
            view = machine.view
            if out.effects or (view is not None and view.number != node.view_number):
                self._after(node, machine)
        for hook in self.after_tick:
            hook(self)

    def _drifting_tick(self, node: Node, machine: Machine) -> bool:
        """With drifting clocks (R1): a replica learns its lease clock, the node's rate times
        world time (a pause shows as a jump); the view service gets as many ticks as its clock
        advanced in this one (0, 1 or 2: the extra one here). False: skip its tick."""
        now, rate = self.now, node.clock_rate
        if isinstance(machine, Replica):
            machine.observe_clock(int(now * rate))
        elif isinstance(machine, ViewService):
            count = int(now * rate) - int((now - 1) * rate)
            if count == 0:
                return False
            for _ in range(count - 1):
                machine.on_tick(self._out)
        return True

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick()

    def run_until(self, condition: Callable[[World], bool], ticks_max: int) -> bool:
        """Tick until ``condition`` holds (checked before each tick); False if it never did."""
        for _ in range(ticks_max):
            if condition(self):
                return True
            self.tick()
        return condition(self)

    def _release_held(self) -> None:
        """Send what waited for a slow sync that has completed, in order."""
        now = self.now
        for name in sorted(self.holding):
            held = self.nodes[name].held
            released = 0
            while released < len(held) and held[released][0] <= now:
                effect = held[released][1]
                self.network.send(now, name, effect.target, effect.message)
                released += 1
            del held[:released]
            if not held:
                self.holding.discard(name)

    def _deliver_due(self) -> None:
        network = self.network
        nodes = self.nodes
        out = self._out
        now = self.now
        while (envelope := network.next_due(now)) is not None:
            node = nodes.get(envelope.target)
            machine = None if node is None else node.machine
            if node is None or machine is None:
                self.stats.lost_to_down_nodes += 1
                continue
            if node.paused:
                if len(node.inbox) < self.config.paused_inbox_max:
                    node.inbox.append(envelope)
                else:
                    self.stats.lost_in_pause += 1
                continue
            message = self._receive(envelope, decode(envelope))
            if isinstance(machine, Replica):
                if self.lease_clocks:
                    machine.observe_clock(int(now * node.clock_rate))
                machine.on_messages(self._batch(envelope, message), out)
            else:
                machine.on_message(envelope.source, message, out)
            self._after(node, machine)

    def _batch(self, first: Envelope, message: AnyMessage) -> list[tuple[str, AnyMessage]]:
        """``first`` and the envelopes due now for the same replica right after it: handled
        together, as the runtime host handles what one loop iteration received. A message that
        may change the view starts a batch of its own, so each reply is checked against the
        view it was sent in."""
        batch = [(first.source, message)]
        network = self.network
        while (envelope := network.peek_due(self.now)) is not None:
            if envelope.target != first.target:
                break
            message = decode(envelope)
            if type(message) in VIEW_CARRIERS:
                break
            network.next_due(self.now)
            batch.append((envelope.source, self._receive(envelope, message)))
        return batch

    def _receive(self, envelope: Envelope, message: AnyMessage) -> AnyMessage:
        self.stats.deliveries += 1
        self.trace.deliver(self.now, envelope.source, envelope.target, envelope.payload)
        if self.tracing:
            self.trace.deliver_decoded(self.now, envelope.source, envelope.target, message)
        return message

    # --- effects and per-step checks ----------------------------------------------------------

    def _after(self, node: Node, machine: Machine) -> None:
        """Execute the effects of the handler that just ran on ``node``, then check its view."""
        out = self._out
        if out.effects:
            self._execute(node, machine, out.take())
        if node.kind == "adversary":
            assert isinstance(machine, Adversary)
            if machine.admitted:
                raise InvariantViolation("hostile-admitted", machine.admitted[0])
        if self.evictions.active and node.kind == "replica":
            assert isinstance(machine, Replica)
            self.evictions.observe(node.name, machine.store, self.clock())
        number = self._view_number(machine)
        if number != node.view_number:
            if number < node.view_number:
                self.monitor.view_number_moved(node.name, node.view_number, number)
            node.view_number = number

    @staticmethod
    def _view_number(machine: Machine) -> int:
        view = machine.view
        return 0 if view is None else view.number

    def _execute(self, node: Node, machine: Machine, effects: list[Effect]) -> None:
        name = node.name
        for effect in effects:
            kind = type(effect)
            if kind is Send:
                assert isinstance(effect, Send)
                message = effect.message
                if type(message) is Reply and message.status == "ok" and node.kind == "replica":
                    assert isinstance(machine, Replica)
                    self.monitor.primary_answered(name, machine.view.number)
                if node.busy_until > self.now or node.held:
                    node.held.append((node.busy_until, effect))
                    self.holding.add(name)
                else:
                    self.network.send(self.now, name, effect.target, message)
            elif kind is Deliver:
                assert isinstance(effect, Deliver)
                self._delivered(name, effect)
            elif kind is Log:
                assert isinstance(effect, Log)
                self.trace.log(self.now, name, effect)
            elif kind is PersistView:
                assert isinstance(effect, PersistView)
                self._view_persisted(name, effect)
            else:
                self._persist(node, effect)

    def _persist(self, node: Node, effect: Effect) -> None:
        """A replica's durable effect, on its disk; a slow sync holds its later sends."""
        assert self.disks is not None, f"{node.name}: a disk effect in a run without disks"
        if isinstance(effect, Persist):
            wait = self.disks.persist(node.name, effect.records, effect.sync, self.now)
        else:
            assert isinstance(effect, PersistSnapshot)
            wait = self.disks.install(node.name, effect.snapshot, self.now)
        node.busy_until = max(node.busy_until, self.now + wait)

    def _view_persisted(self, name: str, effect: PersistView) -> None:
        self.disk[name] = effect
        if effect.view.number == 1 and self.monitor.views and self._all_state_lost():
            self._new_cluster()
        self.monitor.view_issued(effect.view)
        primary = effect.view.primary
        if primary is None or self.disks is None or self.config.disk.fsync == "always":
            return
        replica = self.replica(primary)
        recovered = replica is not None and replica.recovered_unconfirmed
        if recovered and self.nodes[primary].lossy_start and self.unsynced_loss_tick is None:
            self.unsynced_loss_tick = self.now
            self.trace.fault(
                self.now,
                f"{primary} made primary from a disk that lost unsynced writes in a crash "
                f"(fsync {self.config.disk.fsync}: permitted by D1)",
            )

    def _all_state_lost(self) -> bool:
        """No running server holds a view or a disk complete for one: with a view service that
        has none either, a new cluster is all that can form (N1 and N2 at once)."""
        return not any(
            replica is not None and (replica.view.number > 0 or replica.durable_view > 0)
            for replica in self.replicas().values()
        )

    def _new_cluster(self) -> None:
        """Every server and the view service lost their state; view numbers start again. The
        old cluster's history ends here (the run is unavailable as documented)."""
        self.total_loss_tick = self.now
        self.monitor.views.clear()
        self.monitor.answered.clear()
        self.trace.fault(self.now, "every state lost: the view service forms a new cluster")

    def _delivered(self, client: str, effect: Deliver) -> None:
        record = self.history.complete(client, effect.seq, effect.status, effect.value, self.time())
        if record is None:
            return
        self.trace.client(
            self.now, "complete", client, effect.seq, f"{effect.status} {effect.value!r}"
        )
        if effect.status in ("too_large", "invalid", "stale"):
            session = self.session(client)
            if not allowed_final_error(record.op, session.client_id, effect.status, self.limits):
                raise InvariantViolation(
                    "client-status", f"{record.describe()}: {effect.status} {effect.detail}"
                )
        elif effect.status == "ok":
            self._check_sizes(client, record.op, effect.value)
        if isinstance(record.op, Get) and effect.status == "ok":
            self.monitor.value_observed(f"get by {client}", record.op.key, effect.value)

    def _check_sizes(self, client: str, op: Operation, value: str | None) -> None:
        """Limits are UTF-8 bytes (§10): what a client sent over one is never ``ok``, and no
        read returns a value over ``value_bytes_max`` (an append may not outgrow it)."""
        over = over_limit(op, self.session(client).client_id, self.limits)
        if over is not None:
            raise InvariantViolation("client-status", f"{client} {op!r}: ok with its {over} over")
        limit = self.limits.value_bytes_max
        if value is not None and text_bytes(value) > limit:
            raise InvariantViolation(
                "value-size",
                f"{client} read {op.key!r}: {text_bytes(value)} bytes, over {limit}",
            )


__all__ = [
    "VIEW_SERVICE_NAME",
    "ClusterConfig",
    "Node",
    "ReplicaFactory",
    "ViewServiceFactory",
    "World",
    "WorldStats",
    "default_view_service",
]
