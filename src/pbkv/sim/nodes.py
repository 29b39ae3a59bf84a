"""The parts of a simulated world: its configuration, its nodes, its counters.

Theory of operation. A ``Node`` is a name, a kind and the core state machine running under it
(``machine``, None while crashed), plus what the world keeps for it across incarnations (paused
inbox, sends held by a slow disk). ``World`` (``cluster.py``) owns the nodes and drives them;
``WorldFaults`` (``world_faults.py``) breaks them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from pbkv.core.client_session import ClientConfig, ClientSession
from pbkv.core.effects import PersistView, Send
from pbkv.core.replica import Replica, ReplicaConfig
from pbkv.core.view_service import ViewService, ViewServiceConfig
from pbkv.sim.adversary import Adversary
from pbkv.sim.disk import DiskParams
from pbkv.sim.network import Envelope
from pbkv.wire import FRAME_BYTES_MAX_DEFAULT

VIEW_SERVICE_NAME: Final = "vs"

NodeKind = Literal["view_service", "replica", "client", "adversary"]
Machine = ViewService | Replica | ClientSession | Adversary
ReplicaFactory = Callable[..., Replica]
"""``(name, view_service, rng, config[, recovered])``: ``Replica`` or a subclass."""
ViewServiceFactory = Callable[
    [str, ViewServiceConfig, PersistView | None, random.Random], ViewService
]


def default_view_service(
    name: str, config: ViewServiceConfig, saved: PersistView | None, rng: random.Random
) -> ViewService:
    """The view service, resumed from its last ``PersistView`` if it has one (V9); a fresh one
    draws its cluster id from ``rng`` (V16)."""
    return ViewService.restore(name, config, saved, rng)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Shape and timing of a simulated cluster."""

    servers: int = 3
    clients: int = 2
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    view_service: ViewServiceConfig = field(default_factory=ViewServiceConfig)
    client: ClientConfig = field(default_factory=lambda: ClientConfig(timeout_ticks=1_000_000))
    paused_inbox_max: int = 2000
    frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT
    client_id_bytes: tuple[int, ...] = ()
    """Size of each workload client's id (``c1`` first); missing or 0: the session's own."""
    disk: DiskParams = field(default_factory=DiskParams)
    """The replicas' disks (used when ``replica.durable``)."""
    clock_drift: float = 0.0
    """Each node's clock runs at a rate drawn in ``[1 - d, 1 + d]`` (0: every clock exact): the
    view service's ticks and the replicas' lease clocks (R1)."""
    other_limits_rate: float = 0.0
    """Probability that a server's restart uses other size limits than the cluster's (V17)."""


@dataclass(slots=True)
class Node:
    name: str
    kind: NodeKind
    machine: Machine | None = None
    paused: bool = False
    inbox: list[Envelope] = field(default_factory=list)
    starts: int = 0
    view_number: int = 0
    client_config: ClientConfig | None = None
    client_id_bytes: int = 0
    held: list[tuple[int, Send]] = field(default_factory=list)
    """Sends waiting for a slow sync of this node's disk: (tick they may leave, send), in
    order; each waits for the syncs its handler and those before it started, no later one."""
    busy_until: int = 0
    lossy_start: bool = False
    """This incarnation recovered from a disk that lost writes in a crash."""
    clock_rate: float = 1.0
    """How fast this node's clock runs against world time (``ClusterConfig.clock_drift``)."""


@dataclass(slots=True)
class WorldStats:
    ticks: int = 0
    deliveries: int = 0
    lost_to_down_nodes: int = 0
    lost_in_pause: int = 0
    crashes: int = 0
    restarts: int = 0
    pauses: int = 0
    oversized: int = 0
    disks_lost: int = 0
    cluster_crashes: int = 0
