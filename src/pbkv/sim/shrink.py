"""Shrinking a failing run: fewer fault events, clients, operations, fault kinds and servers.

Theory of operation. A failing seed is replayed with smaller overrides, and a candidate is kept
when it still fails *the same check*. Fault events are cut first (binary search on the length of
the schedule prefix, ``faults_max``: the schedule is drawn in full and then truncated, so a shorter
prefix is the same faults minus the last ones); then clients, operations per client, each fault
class, and servers. Every step is one more simulation of a few tens of milliseconds, and the
whole search stops after ``attempts_max`` runs, so shrinking stays cheap. The result is only a
smaller *example*: monotonicity is not guaranteed, so it is not claimed to be minimal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from pbkv.sim.params import Overrides
from pbkv.sim.runner import RunResult

ATTEMPTS_MAX_DEFAULT: Final = 40
RATE_FIELDS: Final = (
    "crash_rate",
    "partition_rate",
    "pause_rate",
    "view_service_crash_rate",
    "view_service_disk_loss",
    "client_crash_rate",
    "stale_restart_rate",
    "hostile_rate",
    "forge_rate",
    "reorder_rate",
    "duplicate_rate",
    "drop_rate",
)

Runner = Callable[[int, Overrides], RunResult]


class _Search:
    def __init__(self, best: RunResult, run: Runner, attempts_max: int) -> None:
        self.best = best
        self.run = run
        self.attempts_left = attempts_max

    def attempt(self, overrides: Overrides) -> bool:
        """Run ``overrides``; keep it if it fails the same check."""
        if self.attempts_left <= 0 or overrides == self.best.overrides:
            return False
        self.attempts_left -= 1
        candidate = self.run(self.best.seed, overrides)
        if candidate.failed and candidate.check == self.best.check:
            self.best = candidate
            return True
        return False


def shrink(failing: RunResult, run: Runner, attempts_max: int = ATTEMPTS_MAX_DEFAULT) -> RunResult:
    """A smaller run of the same seed failing the same check (``failing`` itself if none).

    Args:
        failing: a run whose outcome is ``violation``.
        run: replays ``(seed, overrides)`` with the same factories as the failing run.
        attempts_max: most replays to spend.

    Returns:
        The smallest failing run found; its ``replay`` line reproduces it.
    """
    assert failing.failed
    search = _Search(failing, run, attempts_max)
    _shrink_faults(search)
    params = search.best.params
    for clients in range(1, params.workload.clients):
        if search.attempt(replace(search.best.overrides, clients=clients)):
            break
    ops = search.best.params.workload.ops_per_client
    while ops > 1 and search.attempt(replace(search.best.overrides, ops=ops // 2)):
        ops //= 2
    for name in RATE_FIELDS:
        if getattr(search.best.params.faults, name):
            changes: dict[str, Any] = {name: 0.0}
            search.attempt(replace(search.best.overrides, **changes))
    servers = search.best.params.servers
    if servers > 2:
        search.attempt(replace(search.best.overrides, servers=servers - 1))
    _shrink_faults(search)
    return search.best


def _shrink_faults(search: _Search) -> None:
    """Binary-search the shortest failing prefix of the fault schedule."""
    high = search.best.stats.fault_events
    low = 0
    while low < high and search.attempts_left > 0:
        middle = (low + high) // 2
        if search.attempt(replace(search.best.overrides, faults_max=middle)):
            high = middle
        else:
            low = middle + 1
