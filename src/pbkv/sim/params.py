"""Everything one run is made of, derived from one seed: sub-seeds and drawn parameters.

Theory of operation. ``Seeds.of(seed)`` draws independent 64-bit sub-seeds for the parameters,
the network, the fault schedule, the workload and the nodes (each node incarnation then draws its
own from the node stream), so changing, say, the number of clients does not change the network's
random choices. ``draw_params`` draws the run's shape (servers, clients, keys, operation mix,
think time, client timeout), its fault parameters (swarm testing, ``faults.draw_fault_params``,
then ``faults.draw_edge_faults``), its size limits (``sizes.draw_size_params``) and its disks
(``disk.draw_disk_params`` and the whole-cluster crash rate, kept only in durable runs), the later
draws after the earlier ones so that adding a class of draws does not move the others;
``Overrides`` then replace any of them. ``Overrides.flags()`` renders the overrides as command
line options, so ``pbkv sim --seed N <flags>`` replays the very same run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields, replace
from typing import Final

from pbkv.core.replica import ReplicaConfig
from pbkv.core.view_service import ViewServiceConfig
from pbkv.sim.disk import DiskParams, draw_disk_params
from pbkv.sim.faults import FaultParams, draw_edge_faults, draw_fault_params
from pbkv.sim.sizes import SizeParams, draw_pad, draw_size_params
from pbkv.sim.workload import WorkloadParams

FAULT_TICKS_DEFAULT: Final = 2000
NO_TIMEOUT_TICKS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Seeds:
    params: int
    network: int
    faults: int
    workload: int
    nodes: int
    adversary: int
    disk: int

    @classmethod
    def of(cls, seed: int) -> Seeds:
        rng = random.Random(seed)
        return cls(*(rng.getrandbits(64) for _ in range(7)))


@dataclass(frozen=True, slots=True)
class SimParams:
    """The drawn (and overridden) shape of one run."""

    servers: int
    workload: WorkloadParams
    faults: FaultParams
    fault_ticks: int = FAULT_TICKS_DEFAULT
    faults_max: int | None = None
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    dead_after_ticks: int = ViewServiceConfig().dead_after_ticks
    forget_after_ticks: int = ViewServiceConfig().forget_after_ticks
    sizes: SizeParams = field(default_factory=SizeParams)
    disk: DiskParams = field(default_factory=DiskParams)
    backups: int = 1
    """K, the view service's ``backups_max`` (drawn from its own stream: issue 11)."""
    read_leases: bool = False
    clock_drift_max: float = ViewServiceConfig().clock_drift_max
    """The drift bound the view service assumes (R1)."""
    clock_drift: float | None = None
    """The drift the run's clocks really have (None: the bound, as assumed)."""
    lasting_cut: bool = False
    """The primary and its first backup stay cut from each other after healing (N5; drawn from
    a stream of its own in ``LASTING_CUT_RATE`` of the runs)."""
    lasting_cut_from_view_service: bool = False
    """The lasting cut is between the primary and the view service instead (half the lasting
    cuts; probed only until V15 closed ``primary-cut-after-replacement``, 2026-12-01)."""
    other_limits_rate: float = 0.0
    """Probability that a server's restart uses other size limits (V17; drawn on its own)."""

    def describe(self) -> str:
        limit = "" if self.faults_max is None else f" (first {self.faults_max} fault events)"
        replica = self.replica
        return (
            f"servers={self.servers} backups={self.backups} {self.workload.describe()}\n"
            f"timing: ping={replica.ping_interval_ticks} dead_after={self.dead_after_ticks} "
            f"forget_after={self.forget_after_ticks} "
            f"retry={replica.forward_retry_ticks}/{replica.transfer_retry_ticks} "
            f"chunk={replica.transfer_chunk_bytes}B batch={replica.forward_batch_requests_max} "
            f"in_flight={replica.forwards_in_flight_max} queue={replica.requests_queued_max} "
            f"log={replica.log_entries_max}\n"
            f"{self.sizes.describe()}"
            + (f" other-limits={self.other_limits_rate:.2f}" if self.other_limits_rate else "")
            + "\n"
            f"{self.disk.describe()}\n"
            f"faults for {self.fault_ticks} ticks{limit}: {self.faults.describe()}"
            + self.describe_leases()
            + LASTING_CUT_LINES[self.lasting_cut_shape()]
        )

    def lasting_cut_shape(self) -> str:
        """ "" (every cut heals), "backup" (N5) or "view-service" (the primary, for good: the
        service must fail over, by V15 when it had just replaced the backup)."""
        if not self.lasting_cut:
            return ""
        return "view-service" if self.lasting_cut_from_view_service else "backup"

    def describe_leases(self) -> str:
        if not self.read_leases:
            return ""
        drift = self.clock_drift_max if self.clock_drift is None else self.clock_drift
        return f"\nread leases: drift bound {self.clock_drift_max:g}, clocks drift {drift:g}"


def draw_replica_config(rng: random.Random) -> tuple[ReplicaConfig, int]:
    """Protocol timing and batching, mostly the defaults, sometimes extreme (swarm): multi-chunk
    transfers, one-request batches, one forward in flight, fast or slow retransmits."""
    ping = rng.choice((10, 10, 5, 20))
    retry = rng.choice((20, 20, 5, 50))
    config = ReplicaConfig(
        ping_interval_ticks=ping,
        forward_retry_ticks=retry,
        transfer_retry_ticks=retry,
        transfer_chunk_bytes=rng.choice((1024 * 1024, 1024 * 1024, 24, 100)),
        forward_batch_requests_max=rng.choice((4096, 4096, 1, 3)),
        forwards_in_flight_max=rng.choice((2, 2, 1, 4)),
    )
    return config, ping * rng.choice((3, 5, 5, 8))


@dataclass(frozen=True, slots=True)
class Overrides:
    """Parameters fixed by the user instead of drawn; None means "draw it from the seed"."""

    servers: int | None = None
    backups: int | None = None
    clients: int | None = None
    keys: int | None = None
    ops: int | None = None
    ticks: int | None = None
    timeout_ticks: int | None = None
    drop_rate: float | None = None
    duplicate_rate: float | None = None
    reorder_rate: float | None = None
    crash_rate: float | None = None
    pause_rate: float | None = None
    partition_rate: float | None = None
    view_service_crash_rate: float | None = None
    view_service_disk_loss: float | None = None
    client_crash_rate: float | None = None
    stale_restart_rate: float | None = None
    hostile_rate: float | None = None
    forge_rate: float | None = None
    cluster_crash_rate: float | None = None
    disk: str | None = None
    """``none`` (replicas in memory only) or an fsync policy: ``always``, ``everysec``, ``no``."""
    disk_slow_rate: float | None = None
    disk_torn_rate: float | None = None
    disk_damage_rate: float | None = None
    disk_wipe_rate: float | None = None
    """Probability the operator wipes a damaged disk (the node restarts without state)."""
    disk_foreign_rate: float | None = None
    """Probability a restart finds another cluster's disk in the replica's place (V16)."""
    disk_repair_rate: float | None = None
    """Probability the operator restarts a refused damaged log with ``--repair``."""
    other_limits_rate: float | None = None
    """Probability a server's restart uses other size limits than the cluster's (V17)."""
    faults_max: int | None = None
    no_faults: bool = False
    probe_open_holes: bool = False
    read_leases: bool = False
    clock_drift_max: float | None = None
    clock_drift: float | None = None
    lasting_cut: bool = False
    """Keep the primary cut from its first backup after healing in this run (N5)."""

    def flags(self) -> list[str]:
        """The command line options that reproduce these overrides."""
        result: list[str] = []
        for item in fields(self):
            value = getattr(self, item.name)
            flag = "--" + item.name.replace("_", "-")
            if value is True:
                result.append(flag)
            elif value is not None and value is not False:
                result.append(
                    f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"
                )
        return result


def draw_params(seed: int, overrides: Overrides | None = None) -> SimParams:
    """The parameters of run ``seed`` (see the module docstring)."""
    overrides = overrides or Overrides()
    rng = random.Random(Seeds.of(seed).params)
    weights = [rng.randint(0, 4) for _ in range(4)]
    # At least some gets: they catch stale reads, and they keep the linearizability search
    # small (a long run of concurrent appends with no read in between has many orders).
    weights[0] = max(weights[0], 1)
    ops = rng.randint(10, 80)
    # Spread each client's operations over the fault phase (mean think = phase / ops), except
    # in a quarter of the runs, which issue them back to back.
    think = 0 if rng.random() < 0.25 else 2 * FAULT_TICKS_DEFAULT // ops
    if not any(weights[1:3]):
        weights[2] = 1
    workload = WorkloadParams(
        clients=1 if rng.random() < 0.1 else rng.randint(2, 4),
        keys=rng.randint(1, 3),
        ops_per_client=ops,
        get_weight=weights[0],
        put_weight=weights[1],
        append_weight=weights[2],
        delete_weight=min(weights[3], 1),
        think_ticks_max=think,
        timeout_ticks=rng.choice((NO_TIMEOUT_TICKS,) * 3 + (300, 1000)),
    )
    servers = rng.choice((2, 3, 3, 3, 4))
    faults = draw_fault_params(rng)
    replica, dead_after = draw_replica_config(rng)
    workload = replace(workload, pipeline=rng.choice((1, 1, 1, 2, 4)))
    forget_after = rng.choice((6000, 6000, 4 * dead_after))
    # Bounded queues at their edge now and then: "busy" while transferring or when the
    # replication backlog is full, and a client whose numbers wait for a free slot (C3).
    replica = replace(
        replica,
        requests_queued_max=rng.choice((10_000, 10_000, 10_000, 2)),
        log_entries_max=rng.choice((100_000, 100_000, 100_000, 4)),
    )
    workload = replace(workload, in_flight_max=rng.choice((1024, 1024, 1024, 2)))
    workload, faults, sizes = _draw_edges(rng, workload, faults)
    disk = replace(
        draw_disk_params(rng), foreign_rate=draw_foreign_rate(seed), repair_rate=draw_repair(seed)
    )
    other_limits = draw_other_limits(seed)
    cluster_crash_rate = rng.uniform(0.3, 1.5) if rng.random() < 0.5 else 0.0
    faults = replace(faults, cluster_crash_rate=cluster_crash_rate)
    sizes = replace(
        sizes,
        pad=draw_pad(random.Random(Seeds.of(seed).params ^ PAD_STREAM)),
        batch_bytes_max=draw_batch_bytes(seed, sizes),
    )
    params = SimParams(
        servers,
        workload,
        faults,
        replica=sizes.replica(replica),
        dead_after_ticks=dead_after,
        forget_after_ticks=forget_after,
        sizes=sizes,
        disk=disk,
        backups=draw_backups(seed),
        other_limits_rate=other_limits,
    )
    lasting_cut, from_view_service = draw_lasting_cut(seed)
    params = replace(
        params, lasting_cut=lasting_cut, lasting_cut_from_view_service=from_view_service
    )
    return apply_overrides(params, overrides)


LASTING_CUT_LINES: Final = {
    "": "",
    "backup": "\nlasting cut: the primary and its first backup stay cut after healing (N5)",
    "view-service": "\nlasting cut: the primary stays cut from the view service after healing",
}
LASTING_CUT_RATE: Final = 0.2
LASTING_CUT_STREAM: Final = 0x637574


def draw_lasting_cut(seed: int) -> tuple[bool, bool]:
    """Whether the run keeps a cut through the liveness phase, and whether it is between the
    primary and the view service rather than a backup: from a stream of its own, so drawing
    it moved no other parameter of a seed."""
    rng = random.Random(Seeds.of(seed).params ^ LASTING_CUT_STREAM)
    return rng.random() < LASTING_CUT_RATE, rng.random() < 0.5


PAD_STREAM: Final = 0x706164
"""The padding character of a seed's values comes from a stream of its own, like K: drawing it
moved no other parameter of a seed."""

BATCH_STREAM: Final = 0x62617463
TIGHT_BATCH_RATE: Final = 0.25


def draw_batch_bytes(seed: int, sizes: SizeParams) -> int:
    """In one seed of four, forward batches smaller than a maximal request, as in production
    (1 MiB batches, values up to 1 MiB): a request larger than the batch must still travel,
    alone. Its own stream, so no other draw moves (found by review: a 1 MiB value crashed the
    primary, and then the backup promoted in its place)."""
    rng = random.Random(Seeds.of(seed).params ^ BATCH_STREAM)
    if rng.random() < TIGHT_BATCH_RATE:
        return sizes.value_bytes_max // 2
    return sizes.batch_bytes_max


FOREIGN_STREAM: Final = 0x666F7265
FOREIGN_RATES: Final = (0.05, 0.2)


def draw_foreign_rate(seed: int) -> float:
    """In one run of eight, restarts may find another cluster's disk in place (V16); its own
    stream, so no other draw of a seed moves."""
    rng = random.Random(Seeds.of(seed).params ^ FOREIGN_STREAM)
    return rng.choice(FOREIGN_RATES) if rng.random() < 0.125 else 0.0


REPAIR_STREAM: Final = 0x726570


def draw_repair(seed: int) -> float:
    """In half the runs the operator restarts a server refused for a damaged log with
    ``--repair``, half the time or always (else it stays down); its own stream."""
    rng = random.Random(Seeds.of(seed).params ^ REPAIR_STREAM)
    return rng.choice((0.5, 1.0)) if rng.random() < 0.5 else 0.0


OTHER_LIMITS_STREAM: Final = 0x6C696D


def draw_other_limits(seed: int) -> float:
    """In one run of eight, 20 or 50 % of the servers' restarts use other size limits (an
    operator's mistake, V17); its own stream."""
    rng = random.Random(Seeds.of(seed).params ^ OTHER_LIMITS_STREAM)
    return rng.choice((0.2, 0.5)) if rng.random() < 0.125 else 0.0


BACKUPS_DRAWN: Final = (1, 1, 2, 3)
"""K per run; drawn from a stream of its own so adding it moved no other parameter of a seed."""


def draw_backups(seed: int) -> int:
    return random.Random(Seeds.of(seed).params ^ 0x6B61636B).choice(BACKUPS_DRAWN)


def _draw_edges(
    rng: random.Random, workload: WorkloadParams, faults: FaultParams
) -> tuple[WorkloadParams, FaultParams, SizeParams]:
    """The edge faults and the sizes (issue 8), drawn after everything else."""
    faults = draw_edge_faults(rng, faults)
    sizes = draw_size_params(rng, workload.clients)
    if sizes.sessions_max < SESSIONS_EVICTING:
        workload, faults = _evicting(rng, workload, faults)
    return workload, replace(faults, operator_forces=rng.random() < 0.5), sizes


SESSIONS_EVICTING: Final = 100
"""A drawn session table below this size evicts (N3): see ``_evicting``."""


def _evicting(
    rng: random.Random, workload: WorkloadParams, faults: FaultParams
) -> tuple[WorkloadParams, FaultParams]:
    """A run whose exactly-once table is small (N3): many short-lived clients (client crashes,
    each restart a new session), and only gets and appends. A second copy of an append applied
    after its client's eviction is visible in every read and checkable (``sessions.py``); a
    put or delete applied again could reorder writes in ways no check could tell from a bug."""
    workload = replace(
        workload,
        put_weight=0,
        delete_weight=0,
        append_weight=max(1, workload.append_weight),
    )
    rate = max(faults.client_crash_rate, rng.uniform(2.0, 6.0))
    return workload, replace(faults, client_crash_rate=rate)


def apply_overrides(params: SimParams, overrides: Overrides) -> SimParams:
    workload = params.workload
    changes = {
        "clients": overrides.clients,
        "keys": overrides.keys,
        "ops_per_client": overrides.ops,
        "timeout_ticks": overrides.timeout_ticks,
    }
    workload = replace(workload, **{k: v for k, v in changes.items() if v is not None})
    faults = params.faults.quiet() if overrides.no_faults else params.faults
    fault_changes = {
        name: getattr(overrides, name)
        for name in (
            "drop_rate",
            "duplicate_rate",
            "reorder_rate",
            "crash_rate",
            "pause_rate",
            "partition_rate",
            "view_service_crash_rate",
            "view_service_disk_loss",
            "client_crash_rate",
            "stale_restart_rate",
            "hostile_rate",
            "forge_rate",
            "cluster_crash_rate",
        )
        if getattr(overrides, name) is not None
    }
    faults = replace(faults, **fault_changes, probe_open_holes=overrides.probe_open_holes)
    params = replace(
        params,
        servers=overrides.servers if overrides.servers is not None else params.servers,
        backups=overrides.backups if overrides.backups is not None else params.backups,
        workload=workload,
        faults=faults,
        fault_ticks=overrides.ticks if overrides.ticks is not None else params.fault_ticks,
        faults_max=overrides.faults_max,
        read_leases=overrides.read_leases,
        clock_drift_max=params.clock_drift_max
        if overrides.clock_drift_max is None
        else overrides.clock_drift_max,
        clock_drift=overrides.clock_drift,
        lasting_cut=(params.lasting_cut or overrides.lasting_cut) and not overrides.no_faults,
    )
    return _disk_overrides(params, overrides)


DISK_RATE_OVERRIDES: Final = ("torn", "damage", "wipe", "foreign", "repair")
"""``Overrides.disk_<name>_rate`` replaces ``DiskParams.<name>_rate`` as given."""


def _disk_overrides(params: SimParams, overrides: Overrides) -> SimParams:
    disk = params.disk
    if overrides.disk is not None:
        durable = overrides.disk != "none"
        fsync = overrides.disk if durable else disk.fsync
        disk = replace(disk, durable=durable, fsync=fsync)  # type: ignore[arg-type]
    if overrides.disk_slow_rate is not None:
        slow = overrides.disk_slow_rate
        disk = replace(disk, slow_rate=slow, latency_ticks_max=disk.latency_ticks_max or 10)
    rates = {
        f"{name}_rate": getattr(overrides, f"disk_{name}_rate") for name in DISK_RATE_OVERRIDES
    }
    disk = replace(disk, **{field: rate for field, rate in rates.items() if rate is not None})
    if overrides.other_limits_rate is not None:
        params = replace(params, other_limits_rate=overrides.other_limits_rate)
    replica = replace(params.replica, durable=disk.durable)
    faults = params.faults
    if not disk.durable and overrides.cluster_crash_rate is None:
        faults = replace(faults, cluster_crash_rate=0.0)  # without disks: only N1, not drawn
    return replace(params, disk=disk, replica=replica, faults=faults)
