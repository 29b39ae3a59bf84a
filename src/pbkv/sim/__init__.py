"""pbkv.sim: the deterministic simulator. The unchanged core on a seeded world.

One seed derives everything: the run's shape and fault parameters (swarm testing), the network's
losses and delays, the fault schedule, the workload and every node's randomness. A run has a
safety phase with faults, a liveness phase on the healed cluster and final checks
(linearizability with ``pbkv.check``). Typical use::

    result = run_simulation(42)
    if result.failed:
        print(result.check, result.detail, result.replay)

For scripted scenarios, build a ``World`` with ``make_world`` and drive it tick by tick. See
docs/simulator.md.
"""

from pbkv.sim.cluster import ClusterConfig, Node, World
from pbkv.sim.faults import FaultEvent, FaultInjector, FaultParams, make_schedule
from pbkv.sim.history import History, Invocation
from pbkv.sim.invariants import InvariantViolation, SafetyMonitor
from pbkv.sim.network import Envelope, Network, NetworkParams, Partition, isolate, one_way, split
from pbkv.sim.params import Overrides, Seeds, SimParams, draw_params
from pbkv.sim.runner import RunResult, RunStats, run_simulation
from pbkv.sim.scripted import make_world
from pbkv.sim.shrink import shrink
from pbkv.sim.sweep import SweepSummary, sweep
from pbkv.sim.trace import Trace

__all__ = [
    "ClusterConfig",
    "Envelope",
    "FaultEvent",
    "FaultInjector",
    "FaultParams",
    "History",
    "InvariantViolation",
    "Invocation",
    "Network",
    "NetworkParams",
    "Node",
    "Overrides",
    "Partition",
    "RunResult",
    "RunStats",
    "SafetyMonitor",
    "Seeds",
    "SimParams",
    "SweepSummary",
    "Trace",
    "World",
    "draw_params",
    "isolate",
    "make_schedule",
    "make_world",
    "one_way",
    "run_simulation",
    "shrink",
    "split",
    "sweep",
]
