"""Scripted scenarios: a ``World`` built by hand (``make_world``) and driven tick by tick.

Theory of operation. Randomized runs (``runner.py``) draw everything from a seed; scenario tests
instead build a small world with chosen shape, network and factories, and then crash, pause,
partition, hold and release messages themselves (``World``'s fault methods). ``make_world``
seeds every random source from one number, so a scenario is as reproducible as a seed.
"""

from __future__ import annotations

import random
from dataclasses import replace

from pbkv.core.client_session import ClientConfig
from pbkv.core.replica import Replica, ReplicaConfig
from pbkv.core.view_service import ViewServiceConfig
from pbkv.sim.cluster import (
    ClusterConfig,
    ReplicaFactory,
    ViewServiceFactory,
    World,
    default_view_service,
)
from pbkv.sim.disk import DiskParams
from pbkv.sim.network import Network, NetworkParams
from pbkv.sim.trace import Trace
from pbkv.wire import FRAME_BYTES_MAX_DEFAULT


def make_world(
    servers: int = 3,
    clients: int = 2,
    *,
    seed: int = 0,
    network: NetworkParams | None = None,
    replica_factory: ReplicaFactory = Replica,
    view_service_factory: ViewServiceFactory = default_view_service,
    client_timeout_ticks: int = 1_000_000,
    trace: Trace | None = None,
    replica: ReplicaConfig | None = None,
    view_service: ViewServiceConfig | None = None,
    frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
    disk: DiskParams | None = None,
) -> World:
    """A world for scripted scenarios.

    Args:
        servers: replicas ``s1 ..`` started at tick 0 (0: add them later with ``add_node``).
        clients: client sessions ``c1 ..``.
        seed: seeds the network and the nodes' random sources.
        network: loss and delay; default a reliable network with a delay of one tick.
        replica_factory: builds replicas (tests inject broken subclasses).
        view_service_factory: builds the view service.
        client_timeout_ticks: the clients' operation timeout.
        trace: where events go (default: hash and ring only).
        replica: the replicas' configuration (limits among it); default ``ReplicaConfig()``.
        view_service: the view service's configuration.
        frame_bytes_max: the network's frame limit.
        disk: the replicas' disks; durable ones make the replicas durable (``disk.py``).

    Returns:
        The world at tick 0, nodes started, nothing delivered yet.
    """
    params = network or NetworkParams(delay_min_ticks=1, delay_max_ticks=1)
    rng = random.Random(seed)
    disk = disk or DiskParams()
    replica = replica or ReplicaConfig()
    if disk.durable:
        replica = replace(replica, durable=True)
    config = ClusterConfig(
        servers=servers,
        clients=clients,
        client=ClientConfig(timeout_ticks=client_timeout_ticks),
        replica=replica,
        disk=disk,
        view_service=view_service or ViewServiceConfig(),
        frame_bytes_max=frame_bytes_max,
    )
    return World(
        config,
        Network(random.Random(rng.getrandbits(64)), params),
        random.Random(rng.getrandbits(64)),
        trace,
        replica_factory=replica_factory,
        view_service_factory=view_service_factory,
        disk_rng=random.Random(rng.getrandbits(64)),
    )
