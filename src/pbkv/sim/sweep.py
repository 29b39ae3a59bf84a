"""Sweeping many seeds, optionally on several cores, and summarising the outcomes.

Theory of operation. ``sweep`` runs ``run_simulation`` for each seed of a range and hands every
result to ``on_result`` (the CLI's progress bar) in seed order. With ``jobs > 1`` the seeds are
spread over worker processes (each run is independent and deterministic, so parallelism changes
nothing but the wall time). ``SweepSummary`` counts outcomes, keeps the failing results, and sums
deliveries and per-run simulation time, from which it reports deliveries per second per core.

A worker that dies (killed, out of memory) or a result that cannot reach the parent ends the
sweep with ``SweepWorkerLost`` (one line, exit 5) instead of a wait without end: a
``concurrent.futures`` process pool notices both, where ``multiprocessing.Pool`` lost the task
and waited for it forever (a result the parent could not unpickle hung ``pbkv sim --jobs 2``
on the compiled build, 2026-12-03). Workers ask Linux to kill them when the sweep's process
dies (``PR_SET_PDEATHSIG``): a pool worker would otherwise wait for work forever after a
``kill`` of its parent.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Final

from pbkv.cluster.processes import die_with_parent
from pbkv.errors import PbkvError
from pbkv.sim.params import Overrides
from pbkv.sim.runner import RunResult, run_simulation

CHUNK_SIZE: Final = 8
JOBS_PER_CPU_MAX: Final = 4
"""Worker processes per CPU at most: more only add forks and memory, no speed."""


class SweepWorkerLost(PbkvError):
    """A sweep's worker process died or its result could not be read: the sweep stops."""


@dataclass(slots=True)
class SweepSummary:
    first_seed: int
    count: int
    runs: int = 0
    ok: int = 0
    unavailable: int = 0
    unavailable_n2: int = 0
    unavailable_n5: int = 0
    """A primary cut off from the view service for good with no backup of its view in reach."""
    lost: int = 0
    """Runs that lost writes as D1 permits (fsync everysec/no, every holder crashed)."""
    n3_double_applies: int = 0
    oversized: int = 0
    disks: Counter[str] = field(default_factory=Counter)
    """Runs per disk kind: ``none`` or the fsync policy."""
    cluster_crashes: int = 0
    frames_lost: int = 0
    torn_tails: int = 0
    refused_starts: int = 0
    foreign_disks: int = 0
    repaired: int = 0
    lasting_cuts: int = 0
    """Runs whose cut outlasted the heal (N5)."""
    violations: list[RunResult] = field(default_factory=list)
    linearizability_unknown: int = 0
    deliveries: int = 0
    operations: int = 0
    simulated_s: float = 0.0
    check_s: float = 0.0
    wall_s: float = 0.0

    def add(self, result: RunResult) -> None:
        self.runs += 1
        if result.outcome == "ok":
            self.ok += 1
        elif result.outcome == "unavailable":
            self.unavailable += 1
            self.unavailable_n2 += result.check == "N2"
            self.unavailable_n5 += result.check == "N5"
        elif result.outcome == "lost":
            self.lost += 1
        else:
            self.violations.append(result)
        if result.stats.linearizability == "unknown":
            self.linearizability_unknown += 1
        self.deliveries += result.stats.deliveries
        self.operations += result.stats.operations
        self.n3_double_applies += result.stats.n3_double_applies
        self.oversized += result.stats.oversized
        stats = result.stats
        self.disks[stats.disk] += 1
        self.cluster_crashes += stats.cluster_crashes
        self.frames_lost += stats.frames_lost
        self.torn_tails += stats.torn_tails
        self.refused_starts += stats.refused_starts
        self.foreign_disks += stats.foreign_disks
        self.repaired += stats.repaired
        self.lasting_cuts += stats.lasting_cut
        self.simulated_s += result.stats.elapsed_s - result.stats.check_s
        self.check_s += result.stats.check_s

    @property
    def deliveries_per_s(self) -> float:
        """Deliveries per second of simulation time on one core (checker time excluded)."""
        return self.deliveries / self.simulated_s if self.simulated_s > 0 else 0.0

    def render(self) -> str:
        last = self.first_seed + self.count - 1
        lines = [
            f"swept {self.runs} seeds ({self.first_seed}..{last}) in {self.wall_s:.1f} s: "
            f"{self.ok} ok, {self.unavailable} unavailable as documented "
            f"({self.unavailable - self.unavailable_n2 - self.unavailable_n5} N1, "
            f"{self.unavailable_n2} N2, {self.unavailable_n5} N5), "
            f"{self.lost} lost unsynced writes as documented (D1), "
            f"{len(self.violations)} violations",
            f"operations: {self.operations}; linearizability unknown (budget): "
            f"{self.linearizability_unknown}; messages over the frame limit: {self.oversized}; "
            f"double applies permitted by N3: {self.n3_double_applies}; "
            f"cuts that outlasted the heal: {self.lasting_cuts}",
            f"disks: {', '.join(f'{n} {k}' for k, n in sorted(self.disks.items()))}; "
            f"{self.cluster_crashes} whole-cluster crashes, {self.frames_lost} unsynced frames "
            f"lost, {self.torn_tails} torn tails, {self.refused_starts} refused starts, "
            f"{self.repaired} repaired, {self.foreign_disks} foreign disks",
            f"deliveries: {self.deliveries} at {self.deliveries_per_s:,.0f}/s per core "
            f"(simulation {self.simulated_s:.1f} s, checker {self.check_s:.1f} s, summed over "
            "runs)",
        ]
        for result in self.violations:
            lines.append(f"  seed {result.seed}: {result.check}: {first_line(result.detail)}")
            lines.append(f"    replay: {result.replay}")
        return "\n".join(lines)


def first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _run_one(job: tuple[int, Overrides]) -> RunResult:
    seed, overrides = job
    return run_simulation(seed, overrides)


def pool_size(jobs: int, seeds: int) -> int:
    """Worker processes for ``jobs`` asked: never more than one per seed, nor more than
    ``JOBS_PER_CPU_MAX`` per CPU (``--jobs 100000`` forked thousands and hung)."""
    return max(1, min(jobs, seeds, (os.cpu_count() or 1) * JOBS_PER_CPU_MAX))


def results(seeds: Iterable[int], overrides: Overrides, jobs: int = 1) -> Iterator[RunResult]:
    """Results of the real core for ``seeds``, in seed order."""
    work = [(seed, overrides) for seed in seeds]
    workers = pool_size(jobs, len(work))
    if workers <= 1:
        for job in work:
            yield _run_one(job)
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        yield from pool.map(_run_one, work, chunksize=CHUNK_SIZE)
    except BrokenProcessPool as error:
        raise SweepWorkerLost(
            f"a sweep worker process died or sent a result that could not be read "
            f"({_last_line(error.__cause__ or error)}); the sweep stopped "
            "(run again, or with --jobs 1 to see the failing seed)"
        ) from None
    finally:  # stopped early (Ctrl-C, an error): drop the seeds not started, do not run them
        pool.shutdown(wait=True, cancel_futures=True)


def _die_with_parent(parent_pid: int) -> None:
    """In a worker: SIGKILL when the sweep's process dies (Linux; elsewhere nothing)."""
    if die_with_parent(signal.SIGKILL) and os.getppid() != parent_pid:
        os._exit(1)  # it died before the request took effect


def _last_line(error: BaseException) -> str:
    """The last line of ``error``'s text: a worker's traceback ends with its exception (and,
    as ``concurrent.futures`` quotes it, a line of three quotes, skipped)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip(" '")]
    return lines[-1][:200] if lines else type(error).__name__


def sweep(
    first_seed: int,
    count: int,
    overrides: Overrides | None = None,
    jobs: int = 1,
    on_result: Callable[[RunResult], None] | None = None,
) -> SweepSummary:
    """Run seeds ``first_seed .. first_seed + count - 1`` against the real core.

    Args:
        first_seed: the first seed.
        count: how many consecutive seeds.
        overrides: parameters fixed for every run.
        jobs: worker processes (1: run in this process); at most ``pool_size`` start.
        on_result: called with each result, in seed order.

    Returns:
        The summary, with every violating result.
    """
    summary = SweepSummary(first_seed, count)
    started = time.perf_counter()
    seeds = range(first_seed, first_seed + count)
    for result in results(seeds, overrides or Overrides(), jobs):
        summary.add(result)
        if on_result is not None:
            on_result(result)
    summary.wall_s = time.perf_counter() - started
    return summary
