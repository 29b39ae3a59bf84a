"""Fault parameters, the fault schedule drawn from them, and the injector that applies it.

Theory of operation. ``FaultParams`` are rates and bounds; with swarm testing each seed draws
its own (``draw_fault_params``): every fault class is switched on or off by a coin and, when on,
gets a drawn intensity, so some runs hammer one fault and others mix several (Groce et al.,
"Swarm testing", ISSTA 2012). From the parameters, the node names and the fault-phase length,
``make_schedule`` draws a list of ``FaultEvent`` values up front: crashes (of a server, the primary
or the backup, resolved when the event fires) with a downtime, pauses, partitions (isolate a
node, split the cluster in two, cut one or both directions of one link, cut the primary and
some clients off from the rest) with a duration, view-service crashes (now and then losing
its disk: it restarts with no state, N2), client crashes (the session is lost; its open
operations become indeterminate), *stale restarts* (a server's messages are captured for a
few ticks, the server crashes and restarts, and the captured messages, pings of the dead
incarnation among them, are released after the restart was noticed) and, in durable runs,
*whole-cluster crashes* (every server and the view service at once, each back after its own
drawn downtime). Drawing the schedule first
makes it printable, and shrinkable by truncation (``faults_max``).

``FaultInjector`` runs in the world's ``before_tick`` hook: it fires due events and undoes expired
ones (restart, resume, heal). An event whose target is not in a state to receive it (crash a
node that is down, pause a paused node) is skipped. ``heal`` ends the fault phase: partitions
heal, paused nodes resume, crashed nodes restart (the view service first, from its disk), and
the network stops losing, duplicating and reordering.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from dataclasses import dataclass
from typing import Final, Literal

from pbkv.sim.cluster import VIEW_SERVICE_NAME, World
from pbkv.sim.holes import STATELESS_VIEW_PARTITIONED, STATELESS_VIEW_REISSUE, left_out
from pbkv.sim.network import Envelope, NetworkParams, isolate, one_way, split

PER_TICKS: Final = 1000
"""Fault rates are expected events per this many ticks."""

FaultKind = Literal[
    "crash",
    "pause",
    "isolate",
    "split",
    "one_way",
    "crash_view_service",
    "crash_client",
    "stale_restart",
    "crash_cluster",
]
MEMBER_SELECTORS: Final = ("primary", "backup")
LAST_OF_SEVERAL_BACKUPS: Final = "last_of_several_backups"
"""Resolves to the view's last backup when it has two or more, else to nobody."""
DEPOSED_TICKS_MIN: Final = 150
CAPTURE_TICKS_MAX: Final = 40
"""A stale restart captures the server's messages for 1 .. this many ticks before it crashes."""
RELEASE_AFTER_TICKS_MAX: Final = 80
"""... and releases them 1 .. this many ticks after the restart."""
STALE_DOWNTIME_TICKS_MAX: Final = 100
"""A stale restart is a quick one (the point is the late messages, not the absence): down at
most this long, of a server drawn by name (not "the primary")."""
PARTITION_SHAPES: Final = (
    *("isolate", "isolate", "split", "one_way", "pair"),
    *("minority", "minority", "deposed", "deposed"),
)


@dataclass(frozen=True, slots=True)
class FaultParams:
    """Network fault probabilities and fault-event rates (events per 1000 ticks)."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    delay_min_ticks: int = 1
    delay_max_ticks: int = 3
    reorder_rate: float = 0.0
    reorder_delay_max_ticks: int = 30
    crash_rate: float = 0.0
    downtime_max_ticks: int = 200
    pause_rate: float = 0.0
    pause_ticks_max: int = 100
    partition_rate: float = 0.0
    partition_ticks_max: int = 200
    view_service_crash_rate: float = 0.0
    view_service_disk_loss: float = 0.0
    """Probability that a view-service crash loses its disk (it restarts with no state)."""
    client_crash_rate: float = 0.0
    stale_restart_rate: float = 0.0
    hostile_rate: float = 0.0
    """Raw requests with oversized fields per 1000 ticks (``adversary.py``)."""
    forge_rate: float = 0.0
    """Forged protocol messages per 1000 ticks (``adversary.py``)."""
    cluster_crash_rate: float = 0.0
    """Whole-cluster crashes (every server and the view service at once) per 1000 ticks."""
    operator_forces: bool = False
    probe_open_holes: bool = False
    """Keep the ingredients that reach the core's known open holes (``holes.py``)."""
    """After healing, an operator restarts a view service that waits for lack of state (N2)
    with ``force_new_cluster`` (V11), once."""

    def network(self) -> NetworkParams:
        """The per-message part. The fields are kept flat here, under ``NetworkParams``' own
        names, so overrides and shrinking can set any of them by name."""
        return NetworkParams(
            **{spec.name: getattr(self, spec.name) for spec in dataclasses.fields(NetworkParams)}
        )

    def healed(self) -> NetworkParams:
        """The network of the liveness phase: same delays, nothing lost, duplicated or reordered."""
        return self.quiet().network()

    def quiet(self) -> FaultParams:
        """No faults at all (delays kept)."""
        return FaultParams(
            delay_min_ticks=self.delay_min_ticks, delay_max_ticks=self.delay_max_ticks
        )

    def describe(self) -> str:
        parts = [f"delay={self.delay_min_ticks}..{self.delay_max_ticks}"]
        if self.drop_rate:
            parts.append(f"drop={self.drop_rate:.3f}")
        if self.duplicate_rate:
            parts.append(f"duplicate={self.duplicate_rate:.3f}")
        if self.reorder_rate:
            parts.append(f"reorder={self.reorder_rate:.3f}(+{self.reorder_delay_max_ticks})")
        if self.crash_rate:
            parts.append(f"crash={self.crash_rate:.2f}/kt(down<={self.downtime_max_ticks})")
        if self.pause_rate:
            parts.append(f"pause={self.pause_rate:.2f}/kt(<={self.pause_ticks_max})")
        if self.partition_rate:
            parts.append(f"partition={self.partition_rate:.2f}/kt(<={self.partition_ticks_max})")
        if self.view_service_crash_rate:
            loss = self.view_service_disk_loss
            parts.append(
                f"vs-crash={self.view_service_crash_rate:.2f}/kt"
                + (f"(disk lost {loss:.0%})" if loss else "")
            )
        extra = {
            "client-crash": self.client_crash_rate,
            "stale-restart": self.stale_restart_rate,
            "hostile": self.hostile_rate,
            "forge": self.forge_rate,
        }
        extra["cluster-crash"] = self.cluster_crash_rate
        parts += [f"{name}={rate:.2f}/kt" for name, rate in extra.items() if rate]
        if self.operator_forces and self.view_service_disk_loss:
            parts.append("operator-forces-new-cluster")
        if self.probe_open_holes:
            parts.append("probing-open-holes")
        return " ".join(parts)


def draw_fault_params(rng: random.Random) -> FaultParams:
    """Swarm testing: each fault class on or off by a coin, with a drawn intensity when on."""

    def on(probability: float = 0.5) -> bool:
        return rng.random() < probability

    delay_max = rng.choice((1, 2, 3, 3, 5, 8))
    return FaultParams(
        drop_rate=rng.uniform(0.01, 0.25) if on() else 0.0,
        duplicate_rate=rng.uniform(0.01, 0.2) if on() else 0.0,
        delay_min_ticks=1,
        delay_max_ticks=delay_max,
        reorder_rate=rng.uniform(0.01, 0.2) if on() else 0.0,
        reorder_delay_max_ticks=rng.choice((10, 40, 150)),
        crash_rate=rng.uniform(0.3, 2.5) if on() else 0.0,
        downtime_max_ticks=rng.choice((30, 100, 300, 800)),
        pause_rate=rng.uniform(0.5, 3.0) if on(0.4) else 0.0,
        pause_ticks_max=rng.choice((20, 80, 300)),
        partition_rate=rng.uniform(0.5, 4.0) if on() else 0.0,
        partition_ticks_max=rng.choice((40, 150, 500)),
        view_service_crash_rate=rng.uniform(0.2, 1.5) if on(0.25) else 0.0,
    )


def draw_edge_faults(rng: random.Random, params: FaultParams) -> FaultParams:
    """The faults at the edges of the model (issue 8), each on by its own coin: disk loss of the
    view service, client crashes, stale restarts, hostile clients and a forger. Drawn after
    everything else, so the other parameters of a seed do not move."""

    def on(probability: float) -> bool:
        return rng.random() < probability

    return dataclasses.replace(
        params,
        view_service_disk_loss=rng.choice((0.3, 1.0)) if on(0.3) else 0.0,
        client_crash_rate=rng.uniform(0.5, 3.0) if on(0.3) else 0.0,
        stale_restart_rate=rng.uniform(0.3, 1.5) if on(0.3) else 0.0,
        hostile_rate=rng.uniform(5.0, 50.0) if on(0.3) else 0.0,
        forge_rate=rng.uniform(5.0, 60.0) if on(0.3) else 0.0,
    )


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One scheduled fault. ``target`` is a node name or ``primary``/``backup`` (resolved when
    the event fires); ``side`` and ``other`` are the sides of a split (``other`` empty: everyone
    else); ``peer`` the receiving end of a one-way
    cut; ``duration`` ticks until it is undone."""

    tick: int
    kind: FaultKind
    duration: int
    target: str = ""
    side: tuple[str, ...] = ()
    peer: str = ""
    other: tuple[str, ...] = ()
    lose_state: bool = False
    capture_ticks: int = 0
    release_ticks: int = 0
    downtimes: tuple[int, ...] = ()
    """A whole-cluster crash: each node's downtime (the view service first, then s1, ..)."""

    def describe(self) -> str:
        what = {
            "crash": f"crash {self.target}",
            "pause": f"pause {self.target}",
            "isolate": f"isolate {self.target}",
            "split": f"split {','.join(self.side)} | {','.join(self.other) or 'rest'}",
            "one_way": f"cut {self.target} -> {self.peer}",
            "crash_view_service": "crash vs" + (" losing its disk" if self.lose_state else ""),
            "crash_client": f"crash client {self.target}",
            "stale_restart": (
                f"capture {self.target} for {self.capture_ticks}, crash it, release "
                f"{self.release_ticks} after its restart"
            ),
            "crash_cluster": f"crash every node (down {self.downtimes})",
        }[self.kind]
        return f"t={self.tick} {what} for {self.duration}"


def _count(rng: random.Random, rate: float, ticks: int) -> int:
    expected = rate * ticks / PER_TICKS
    whole = int(expected)
    return whole + (1 if rng.random() < expected - whole else 0)


def make_schedule(
    params: FaultParams, nodes: list[str], fault_ticks: int, rng: random.Random
) -> list[FaultEvent]:
    """Draw the fault events of one run, in tick order."""
    servers = [name for name in nodes if name.startswith("s")]
    events: list[FaultEvent] = []

    def when() -> int:
        return rng.randint(1, max(1, fault_ticks - 1))

    for _ in range(_count(rng, params.crash_rate, fault_ticks)):
        target = rng.choice([*servers, *MEMBER_SELECTORS])
        downtime = rng.randint(1, params.downtime_max_ticks)
        events.append(FaultEvent(when(), "crash", downtime, target=target))
    for _ in range(_count(rng, params.pause_rate, fault_ticks)):
        target = rng.choice([*nodes, *MEMBER_SELECTORS])
        events.append(FaultEvent(when(), "pause", rng.randint(1, params.pause_ticks_max), target))
    for _ in range(_count(rng, params.partition_rate, fault_ticks)):
        events.append(
            _partition_event(rng, nodes, when(), rng.randint(1, params.partition_ticks_max))
        )
    for _ in range(_count(rng, params.view_service_crash_rate, fault_ticks)):
        downtime = rng.randint(1, params.downtime_max_ticks)
        lost = bool(params.view_service_disk_loss) and rng.random() < params.view_service_disk_loss
        lost = lost and not left_out(STATELESS_VIEW_REISSUE, params.probe_open_holes)
        events.append(FaultEvent(when(), "crash_view_service", downtime, lose_state=lost))
    for _ in range(_count(rng, params.client_crash_rate, fault_ticks)):
        clients = [name for name in nodes if name.startswith("c")]
        downtime = rng.randint(1, params.downtime_max_ticks)
        events.append(FaultEvent(when(), "crash_client", downtime, target=rng.choice(clients)))
    for _ in range(_count(rng, params.stale_restart_rate, fault_ticks)):
        events.append(_stale_restart(params, rng, when(), servers))
    for _ in range(_count(rng, params.cluster_crash_rate, fault_ticks)):
        downtimes = tuple(
            rng.randint(1, params.downtime_max_ticks) for _ in range(1 + len(servers))
        )
        events.append(FaultEvent(when(), "crash_cluster", max(downtimes), downtimes=downtimes))
    events.sort(key=lambda event: event.tick)
    return events


def _stale_restart(
    params: FaultParams, rng: random.Random, tick: int, targets: list[str]
) -> FaultEvent:
    return FaultEvent(
        tick,
        "stale_restart",
        rng.randint(1, min(params.downtime_max_ticks, STALE_DOWNTIME_TICKS_MAX)),
        target=rng.choice(targets),
        capture_ticks=rng.randint(1, CAPTURE_TICKS_MAX),
        release_ticks=rng.randint(1, RELEASE_AFTER_TICKS_MAX),
    )


def _partition_event(rng: random.Random, nodes: list[str], tick: int, duration: int) -> FaultEvent:
    """One partition: a node alone, a random split, one direction of a link, both directions of
    a link, the primary with some clients cut off from everyone else, or the primary cut off
    from the view service and some clients (the P9 shape)."""
    endpoints = [*nodes, *MEMBER_SELECTORS]
    clients = [name for name in nodes if name.startswith("c")]
    shape = rng.choice(PARTITION_SHAPES)
    if shape == "isolate":
        return FaultEvent(tick, "isolate", duration, target=rng.choice(endpoints))
    if shape == "split":
        side = tuple(name for name in nodes if rng.random() < 0.5)
        return FaultEvent(tick, "split", duration, side=side)
    if shape == "minority":
        side = ("primary", *(name for name in clients if rng.random() < 0.5))
        return FaultEvent(tick, "split", duration, side=side)
    if shape == "deposed":
        # P9/P10: the primary and the clients that stay with it cannot reach the view service
        # or the clients that leave; the other servers reach everyone. The view service replaces
        # the primary (so it lasts at least DEPOSED_TICKS_MIN), the leavers move to the new one,
        # the stayers keep asking the deposed primary.
        # With two backups or more, the last one stays with the primary (P2: it would confirm
        # the deposed primary's reads had it a say; the view service promotes another).
        staying = tuple(name for name in clients if rng.random() < 0.5)
        leaving = tuple(name for name in clients if name not in staying)
        duration += DEPOSED_TICKS_MIN
        side = ("primary", LAST_OF_SEVERAL_BACKUPS, *staying)
        other = (VIEW_SERVICE_NAME, *leaving)
        return FaultEvent(tick, "split", duration, side=side, other=other)
    source, target = rng.sample(endpoints, 2)
    if shape == "pair":
        return FaultEvent(tick, "split", duration, side=(source,), other=(target,))
    return FaultEvent(tick, "one_way", duration, target=source, peer=target)


Undo = tuple[int, int, str, str]
"""(tick, sequence, action, argument): restart/resume a node or heal a partition."""


class FaultInjector:
    """Applies a schedule to a world; install with ``world.before_tick.append(injector.step)``."""

    def __init__(self, schedule: list[FaultEvent]) -> None:
        self.schedule = schedule
        self.cursor = 0
        self.undo: list[Undo] = []
        self.sequence = 0
        self.fired = 0
        self.partitions = 0
        self.captured: dict[str, list[Envelope]] = {}
        self.probing = False

    def step(self, world: World) -> None:
        now = world.now
        schedule = self.schedule
        while self.cursor < len(schedule) and schedule[self.cursor].tick <= now:
            self.fire(world, schedule[self.cursor])
            self.cursor += 1
        undo = self.undo
        while undo and undo[0][0] <= now:
            _, _, action, argument = heapq.heappop(undo)
            self.undo_one(world, action, argument)

    def undo_one(self, world: World, action: str, argument: str) -> None:
        match action:
            case "restart":
                world.restart(argument)
            case "restart_blank":
                world.restart(argument, lose_state=state_to_lose(world, self.probing))
            case "resume":
                world.resume(argument)
            case "crash_captured":
                self.captured[argument] = world.network.stop_capture(argument)
                world.crash(argument)
            case "release":
                world.release_captured(self.captured.pop(argument, []))
            case _:
                world.heal(argument)

    def later(self, tick: int, action: str, argument: str) -> None:
        self.sequence += 1
        heapq.heappush(self.undo, (tick, self.sequence, action, argument))

    def fire(self, world: World, event: FaultEvent) -> None:
        now = world.now
        target = resolve(world, event.target)
        match event.kind:
            case "crash" | "crash_view_service" | "crash_client":
                name = VIEW_SERVICE_NAME if event.kind == "crash_view_service" else target
                if name and world.crash(name):
                    self.fired += 1
                    action = "restart_blank" if event.lose_state else "restart"
                    self.later(now + event.duration, action, name)
            case "crash_cluster":
                crashed = world.crash_cluster()
                self.fired += 1
                order = [VIEW_SERVICE_NAME, *world.servers()]
                for name, downtime in zip(order, event.downtimes, strict=False):
                    if name in crashed:
                        self.later(now + downtime, "restart", name)
            case "stale_restart":
                if target and world.is_up(target) and target not in world.network.captures:
                    self.fired += 1
                    world.network.capture(target)
                    crash_at = now + event.capture_ticks
                    restart_at = crash_at + event.duration
                    self.later(crash_at, "crash_captured", target)
                    self.later(restart_at, "restart", target)
                    self.later(restart_at + event.release_ticks, "release", target)
            case "pause":
                if target and world.pause(target):
                    self.fired += 1
                    self.later(now + event.duration, "resume", target)
            case "isolate" | "split" | "one_way":
                partition_name = f"p{self.partitions + 1}"
                if event.kind == "isolate":
                    if not target:
                        return
                    partition = isolate(partition_name, target, world.names)
                elif event.kind == "split":
                    side = list(dict.fromkeys(resolve(world, name) for name in event.side))
                    side = [name for name in side if name]
                    if event.other:
                        rest = [resolve(world, name) for name in event.other]
                    else:
                        rest = [name for name in world.names if name not in side]
                    rest = [name for name in rest if name and name not in side]
                    partition = split(partition_name, side, rest)
                else:
                    peer = resolve(world, event.peer)
                    if not target or not peer or target == peer:
                        return
                    partition = one_way(partition_name, target, peer)
                self.partitions += 1
                self.fired += 1
                world.partition(partition)
                self.later(now + event.duration, "heal", partition_name)

    def heal(self, world: World) -> None:
        """End the fault phase: see the module docstring."""
        self.cursor = len(self.schedule)
        self.undo.clear()
        for name in list(world.network.captures):
            self.captured[name] = world.network.stop_capture(name)
        for name in list(self.captured):
            world.release_captured(self.captured.pop(name))
        for name in list(world.network.partitions):
            world.heal(name)
        for name in world.names:
            world.resume(name)
        for name in world.names:
            world.restart(name)


def state_to_lose(world: World, probing: bool = False) -> bool:
    """Restart the view service without its state only while some running server holds a view
    (else every state is gone already and a new cluster is all there is to form), and not while
    the hole ``stateless-view-partitioned`` is open (``holes.py``)."""
    holders = [
        name
        for name, replica in world.replicas().items()
        if replica is not None and replica.view.number > 0
    ]
    return bool(holders) and not left_out(STATELESS_VIEW_PARTITIONED, probing)


def resolve(world: World, target: str) -> str:
    """A node name for ``target`` (``primary``/``backup`` per the current view, or the last
    backup of a view with several), or ""."""
    view = world.current_view()
    if target == LAST_OF_SEVERAL_BACKUPS:
        return view.backups[-1] if len(view.backups) >= 2 else ""
    if target not in MEMBER_SELECTORS:
        return target
    name = view.primary if target == "primary" else view.backup
    return name or ""
