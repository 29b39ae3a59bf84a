"""One simulated run from a seed: safety phase with faults, liveness phase, final checks.

Theory of operation (after TigerBeetle's VOPR). ``run_simulation(seed)`` derives everything from
the seed (``params``), builds a ``World``, and then:

1. *safety phase*: ``fault_ticks`` ticks of workload under the drawn fault schedule, with the
   per-step checks of ``invariants.SafetyMonitor`` after every handler call;
2. *heal*: partitions heal, paused nodes resume, crashed nodes restart, the network stops losing,
   duplicating and reordering, and the clients stop submitting; in a fifth of the runs
   (``lasting_cut``) the primary and its first backup stay cut from each other, both still
   reaching the view service, when a server beyond the primary and K backups can take the
   backup's place: N5 promises that the primary reports it and the view service replaces it,
   so liveness must still hold;
3. *liveness phase*: every open operation must finish within ``liveness_ticks`` (a workload
   operation may end at its own timeout); then a fresh client that never times out reads every
   key, and those reads must succeed within ``liveness_ticks`` too. If they do not, and the view
   service's current view lost every member that held the state (N1), the run is
   ``unavailable`` (as documented, not a failure), and so it is when the view service lost its
   state and waits for the operator (N2); otherwise it is a ``liveness`` violation. Once N1 or N2
   holds after every pre-heal message has landed it holds for good, so the wait stops there;
4. *final checks*: no appended value twice in any running replica's store, and the whole
   history (with the final reads) linearizable per ``pbkv.check.check_history``; when a replica
   recovered from a disk that lost unsynced writes was made primary (fsync ``everysec``/``no``,
   every holder crashed), losing writes is what D1 permits: the run is ``lost``, not judged by
   linearizability (``disk.py``, docs/simulator.md "Disks").

Any ``AssertionError`` from the core (a broken invariant) and any ``InvariantViolation`` ends the
run as a violation; the result carries the failing check, the last events and the replay line.
"""

from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Final, Literal

from pbkv.check import check_history, dump_history_lines
from pbkv.core.client_session import ClientConfig
from pbkv.core.messages import Get
from pbkv.core.replica import Phase, Replica
from pbkv.core.view_service import ViewServiceConfig
from pbkv.sim.adversary import FORGER_NAME, HOSTILE_NAME, AdversaryDriver
from pbkv.sim.cluster import (
    VIEW_SERVICE_NAME,
    ClusterConfig,
    ReplicaFactory,
    ViewServiceFactory,
    World,
    default_view_service,
)
from pbkv.sim.faults import FaultInjector, make_schedule
from pbkv.sim.invariants import (
    InvariantViolation,
    duplicated_tokens,
    unavailable_as_documented,
)
from pbkv.sim.network import Network, split
from pbkv.sim.params import (
    NO_TIMEOUT_TICKS,
    Overrides,
    Seeds,
    SimParams,
    draw_params,
)
from pbkv.sim.sessions import without_permitted_copies
from pbkv.sim.trace import Trace
from pbkv.sim.workload import Workload, key_names

LIVENESS_TICKS_DEFAULT: Final = 2000
CHECK_BUDGET_S_DEFAULT: Final = 10.0
READER: Final = "reader"
OPEN_SHOWN_MAX: Final = 5
STUCK_CHECK_TICKS: Final = 50
OPERATOR_STREAM: Final = 0x6F70
"""The operator's mistakes and choices (``World.operator_rng``) come from a stream of their own."""

Outcome = Literal["ok", "violation", "unavailable", "lost"]
"""``lost``: writes were lost as D1 permits (fsync ``everysec``/``no``, every holder crashed)."""


@dataclass(slots=True)
class RunStats:
    ticks: int = 0
    deliveries: int = 0
    messages_sent: int = 0
    messages_lost: int = 0
    operations: int = 0
    completed: int = 0
    indeterminate: int = 0
    views: int = 0
    oversized: int = 0
    n3_double_applies: int = 0
    fault_events: int = 0
    faults_fired: int = 0
    disk: str = "none"
    """``none`` or the fsync policy of the run's disks."""
    cluster_crashes: int = 0
    frames_lost: int = 0
    torn_tails: int = 0
    refused_starts: int = 0
    wiped: int = 0
    foreign_disks: int = 0
    """Restarts that found another cluster's disk in place (V16)."""
    repaired: int = 0
    """Restarts of a damaged log with ``--repair``."""
    lasting_cut: bool = False
    """A cut outlasted the heal in this run (applied, not only drawn)."""
    linearizability: str = "not checked"
    elapsed_s: float = 0.0
    check_s: float = 0.0


@dataclass(slots=True)
class RunResult:
    """What happened in one run; ``replay`` is the command line that repeats it."""

    seed: int
    params: SimParams
    overrides: Overrides
    outcome: Outcome = "ok"
    check: str = ""
    detail: str = ""
    recent: list[str] = field(default_factory=list)
    digest: str = ""
    stats: RunStats = field(default_factory=RunStats)

    @property
    def failed(self) -> bool:
        return self.outcome == "violation"

    @property
    def replay(self) -> str:
        return " ".join(["pbkv sim --seed", str(self.seed), *self.overrides.flags()])


@dataclass(slots=True)
class _Run:
    world: World
    workload: Workload
    injector: FaultInjector
    params: SimParams
    adversaries: AdversaryDriver
    lasting_cut: bool = False
    """A cut was kept through the liveness phase (``SimParams.lasting_cut_shape``)."""


def run_simulation(
    seed: int,
    overrides: Overrides | None = None,
    *,
    replica_factory: ReplicaFactory = Replica,
    view_service_factory: ViewServiceFactory = default_view_service,
    trace_stream: IO[str] | None = None,
    history_stream: IO[str] | None = None,
    liveness_ticks: int = LIVENESS_TICKS_DEFAULT,
    check_budget_s: float = CHECK_BUDGET_S_DEFAULT,
) -> RunResult:
    """Run the simulation of ``seed``.

    Args:
        seed: the one number everything is derived from.
        overrides: parameters to fix instead of drawing them.
        replica_factory: builds replicas (tests inject deliberately broken subclasses).
        view_service_factory: builds the view service (likewise).
        trace_stream: where to write the JSON-lines event trace, if anywhere.
        history_stream: where to write the client history (``pbkv check-history`` format).
        liveness_ticks: bound for open operations, then for the final reads, after healing.
        check_budget_s: time budget of the linearizability check.

    Returns:
        The outcome (``ok``, ``violation`` or ``unavailable``) with statistics; never raises
        for a failing check (a broken core assertion is a ``violation`` too).
    """
    overrides = overrides or Overrides()
    started = time.perf_counter()
    params = draw_params(seed, overrides)
    result = RunResult(seed, params, overrides)
    trace = Trace(trace_stream)
    run = _build(seed, params, trace, replica_factory, view_service_factory)
    try:
        _safety_phase(run)
        unavailable = _liveness_phase(run, liveness_ticks)
        if run.world.total_loss_tick is not None:
            unavailable = (
                f"every server and the view service lost their state by tick "
                f"{run.world.total_loss_tick}; a new cluster formed (N1, N2)"
            )
        else:
            _final_checks(run, result, check_budget_s)
        if run.world.unsynced_loss_tick is not None and result.outcome == "ok":
            result.outcome, result.check = "lost", "D1"
            result.detail = (
                f"a replica whose disk lost unsynced writes in a crash became primary at tick "
                f"{run.world.unsynced_loss_tick} (fsync {params.disk.fsync}, D1); "
                f"linearizability {result.stats.linearizability} (not judged)"
            )
        elif unavailable and result.outcome == "ok":
            check = next((n for n in ("N2", "N5") if f"({n})" in unavailable), "N1")
            result.outcome, result.check, result.detail = "unavailable", check, unavailable
    except InvariantViolation as violation:
        result.outcome, result.check, result.detail = "violation", violation.check, violation.detail
    except AssertionError as error:
        result.outcome, result.check = "violation", "core-assertion"
        result.detail = _assertion_text(error)
    if result.failed:
        result.recent = trace.recent()
    result.digest = trace.digest()
    if history_stream is not None:
        history_stream.writelines(dump_history_lines(run.world.history.operations()))
    _fill_stats(run, result.stats)
    result.stats.elapsed_s = time.perf_counter() - started
    return result


def _build(
    seed: int,
    params: SimParams,
    trace: Trace,
    replica_factory: ReplicaFactory,
    view_service_factory: ViewServiceFactory,
) -> _Run:
    seeds = Seeds.of(seed)
    network = Network(random.Random(seeds.network), params.faults.network())
    world = World(
        _cluster_config(params),
        network,
        random.Random(seeds.nodes),
        trace,
        replica_factory=replica_factory,
        view_service_factory=view_service_factory,
        disk_rng=random.Random(seeds.disk),
        operator_rng=random.Random(seeds.disk ^ OPERATOR_STREAM),
    )
    faults = params.faults
    adversaries = AdversaryDriver(
        faults.hostile_rate,
        faults.forge_rate,
        random.Random(seeds.adversary),
        faults.probe_open_holes,
    )
    if faults.hostile_rate:
        world.add_node(HOSTILE_NAME, "adversary")
    if faults.forge_rate:
        world.add_node(FORGER_NAME, "adversary")
    schedule = make_schedule(
        params.faults, world.names, params.fault_ticks, random.Random(seeds.faults)
    )
    if params.faults_max is not None:
        schedule = schedule[: params.faults_max]
    injector = FaultInjector(schedule)
    injector.probing = params.faults.probe_open_holes
    workload = Workload(
        params.workload, random.Random(seeds.workload), world.clients(), params.sizes
    )
    world.before_tick.append(injector.step)
    world.before_tick.append(adversaries.step)
    world.after_tick.append(workload.step)
    return _Run(world, workload, injector, params, adversaries)


def _cluster_config(params: SimParams) -> ClusterConfig:
    return ClusterConfig(
        servers=params.servers,
        clients=params.workload.clients,
        frame_bytes_max=params.sizes.frame_bytes_max,
        client_id_bytes=params.sizes.client_id_bytes,
        replica=params.replica,
        disk=params.disk,
        view_service=ViewServiceConfig(
            dead_after_ticks=params.dead_after_ticks,
            forget_after_ticks=params.forget_after_ticks,
            backups_max=params.backups,
            read_leases=params.read_leases,
            clock_drift_max=params.clock_drift_max,
        ),
        other_limits_rate=params.other_limits_rate,
        clock_drift=(params.clock_drift_max if params.clock_drift is None else params.clock_drift)
        if params.read_leases
        else 0.0,
        client=ClientConfig(
            timeout_ticks=params.workload.timeout_ticks,
            requests_in_flight_max=params.workload.in_flight_max,
        ),
    )


def _safety_phase(run: _Run) -> None:
    run.world.trace.phase(run.world.now, "faults")
    run.world.run(run.params.fault_ticks)


def _liveness_phase(run: _Run, liveness_ticks: int) -> str | None:
    """Heal, then require every open operation and a final read of every key to finish.

    Returns why the cluster is unavailable as documented (N1), or None if everything finished.
    """
    world = run.world
    run.injector.heal(world)
    run.workload.stop()
    run.adversaries.stop()
    world.set_network(run.params.faults.healed())
    if world.disks is not None:
        # A sync as long as the dead interval holds back the pings behind it (D1), so the
        # server is judged dead while such syncs last (N6): the disk's fault stops too (L4).
        world.disks.cap_latency(run.params.dead_after_ticks // 4)
    world.trace.phase(world.now, "heal")
    shape = run.params.lasting_cut_shape()
    if shape == "backup":
        run.lasting_cut = _cut_primary_from_a_backup(world, run.params.servers, run.params.backups)
    cut_off: frozenset[str] = frozenset()
    if shape == "view-service":
        run.lasting_cut = _cut_primary_from_the_view_service(world)
        cut_off = frozenset([world.current_view().primary or ""]) if run.lasting_cut else cut_off
    faults = run.params.faults
    settled = world.now + faults.delay_max_ticks + faults.reorder_delay_max_ticks
    stuck = _StuckDetector(settled, cut_off)
    operator = _Operator(faults.operator_forces)
    if operator.wait(world, stuck, liveness_ticks):
        world.trace.phase(world.now, "final_reads")
        world.add_node(READER, "client", ClientConfig(timeout_ticks=NO_TIMEOUT_TICKS))
        for key in key_names(run.params.workload.keys):
            world.submit(READER, Get(key))
        if operator.wait(world, stuck, liveness_ticks):
            world.trace.phase(world.now, "end")
            return None
    view_service = world.view_service()
    assert view_service is not None
    why = unavailable_as_documented(view_service, world.replicas(), cut_off)
    if why is None and world.total_loss_tick is not None:
        why = "a new cluster formed (N1, N2)"  # clients that cached old views ignore the new
    if why is None:
        open_ops = world.history.outstanding()
        shown = "; ".join(record.describe() for record in open_ops[:OPEN_SHOWN_MAX])
        raise InvariantViolation(
            "liveness",
            f"{len(open_ops)} operations still open {liveness_ticks} ticks after healing "
            f"although {view_service.view.describe()} has a member holding the state (L4): "
            f"{shown}",
        )
    world.trace.phase(world.now, "unavailable")
    return why


LASTING_CUT: Final = "lasting-cut"


def _cut_primary_from_a_backup(world: World, servers: int, backups_max: int) -> bool:
    """N5: the primary and the first backup of the current view no longer reach each other,
    for good; skipped unless a server is left over beyond the primary and K backups (without
    one, N5 promises nothing: a view short of K backups takes the unreachable server back,
    which happened with K = 2 over three servers when the view held one backup at the heal)."""
    view = world.current_view()
    if view.primary is None or not view.backups or servers < backups_max + 2:
        return False
    backup = view.backups[0]
    world.partition(split(LASTING_CUT, [view.primary], [backup]))
    world.trace.fault(world.now, f"{view.primary} and {backup} stay cut after healing (N5)")
    return True


def _cut_primary_from_the_view_service(world: World) -> bool:
    """P9 for good: the primary no longer reaches the view service (it still reaches its
    backups and the clients), applied only when the view is acknowledged and every backup is
    synced, so the service could promote one. A backup judged dead just after the heal is
    replaced in a view the primary never learns: the service then needs V15 (found as the open
    hole ``primary-cut-after-replacement``, closed by V15)."""
    view = world.current_view()
    view_service = world.view_service()
    if view.primary is None or not view.backups or view_service is None:
        return False
    backups = [world.replica(backup) for backup in view.backups]
    if not view_service.acknowledged or any(
        backup is None or backup.phase is not Phase.SYNCED for backup in backups
    ):
        return False  # a backup restarted empty at the heal: only the cut-off primary holds it
    world.partition(split(LASTING_CUT, [view.primary], [VIEW_SERVICE_NAME]))
    world.trace.fault(world.now, f"{view.primary} stays cut from the view service after healing")
    return True


class _Operator:
    """Waits for the open operations; if the cluster is stuck because the view service lost its
    state (N2) and this run's operator acts, restarts it with ``force_new_cluster`` once (V11)
    and waits again: the promise of V11 (every acknowledged write survives) is then checked."""

    def __init__(self, forces: bool) -> None:
        self.forces = forces

    def wait(self, world: World, stuck: _StuckDetector, ticks: int) -> bool:
        """True when every open operation finished."""
        while True:
            if world.run_until(stuck.done, ticks) and not stuck.why:
                return True
            if not (self.forces and stuck.why is not None and "(N2)" in stuck.why):
                return False
            self.forces = False
            world.force_new_cluster()
            stuck.why = None
            stuck.settled_tick = world.now


class _StuckDetector:
    """Ends a liveness wait early once N1 holds for good.

    N1 is permanent once every message sent before healing has arrived (a transfer chunk still
    in flight could yet sync the backup): the lost primary never comes back, and nobody else
    can sync the backup or acknowledge the view. So it is checked from ``settled_tick`` on,
    every ``STUCK_CHECK_TICKS``.
    """

    def __init__(self, settled_tick: int, cut_off: frozenset[str] = frozenset()) -> None:
        self.settled_tick = settled_tick
        self.cut_off = cut_off
        """Servers the lasting cut keeps from the view service (N5)."""
        self.why: str | None = None

    def done(self, world: World) -> bool:
        if not world.history.open:
            return True
        now = world.now
        if now < self.settled_tick or (now - self.settled_tick) % STUCK_CHECK_TICKS:
            return False
        view_service = world.view_service()
        if view_service is not None:
            self.why = unavailable_as_documented(view_service, world.replicas(), self.cut_off)
        return self.why is not None


def _final_checks(run: _Run, result: RunResult, budget_s: float) -> None:
    world = run.world
    monitor = world.monitor
    for name, replica in world.replicas().items():
        if replica is None:
            continue
        for key, value in replica.store.data.items():
            duplicates = monitor.unpermitted(duplicated_tokens(value))
            if duplicates:
                raise InvariantViolation(
                    "append-at-most-once",
                    f"{name}'s store holds {', '.join(duplicates)} more than once in key "
                    f"{key!r}: {value!r}",
                )
    result.stats.n3_double_applies = len(monitor.n3_copies)
    reading = None
    if monitor.n3_copies:
        permitted = set(monitor.n3_copies)
        reading = partial(without_permitted_copies, permitted=permitted)
    started = time.perf_counter()
    evictions = world.evictions
    operations = world.history.operations(
        reading, lambda record: evictions.evicted_since(record.client, record.invoke)
    )
    verdict = check_history(operations, budget_s=budget_s)
    result.stats.check_s = time.perf_counter() - started
    result.stats.linearizability = verdict.verdict
    if verdict.verdict == "violation" and world.unsynced_loss_tick is None:
        raise InvariantViolation("linearizability", verdict.explanation)


def _assertion_text(error: AssertionError) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    message = str(error) or (frames[-1].line if frames else "") or "assertion failed"
    return f"{message}{where}"


def _fill_stats(run: _Run, stats: RunStats) -> None:
    world = run.world
    network = world.network.stats
    stats.ticks = world.now
    stats.deliveries = world.stats.deliveries
    stats.messages_sent = network.sent
    stats.messages_lost = network.dropped + network.cut + world.stats.lost_to_down_nodes
    stats.operations = len(world.history.records)
    stats.completed = world.history.completed()
    stats.indeterminate = stats.operations - stats.completed
    stats.views = len(world.monitor.views)
    stats.oversized = world.stats.oversized
    stats.fault_events = len(run.injector.schedule)
    stats.faults_fired = run.injector.fired
    stats.cluster_crashes = world.stats.cluster_crashes
    stats.lasting_cut = run.lasting_cut
    if world.disks is not None:
        disk = world.disks.stats
        stats.disk = run.params.disk.fsync
        stats.frames_lost, stats.torn_tails = disk.frames_lost, disk.torn
        stats.refused_starts, stats.wiped = disk.refused, disk.wiped
        stats.foreign_disks, stats.repaired = disk.foreign, disk.repaired
