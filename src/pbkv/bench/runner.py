"""What ``pbkv bench`` does, without the command line: pick the system, run, repeat.

The system under test is either already running (``--viewserver`` / ``--redis``), a cluster
started by ``pbkv cluster`` (``--cluster-dir``: its state file names the view service and the
processes), or started here for the run and stopped after it (``--local-cluster``: a view
service and two servers, or a Redis primary and replica). With ``--runs N`` each run gets a
fresh local cluster.

Killing the primary needs its pid, known when the cluster was started here, read from the
``pbkv cluster`` state file, or given as ``--primary-pid``. It is resolved before the run starts
so that the kill itself is one ``os.kill`` at the planned instant. Whatever named the system, it
must answer before any generator starts (``pbkv.bench.reach.preflight``, exit 3 if not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbkv.bench.backends import backend_factory
from pbkv.bench.loadgen import LoadResult, LoadSpec, RunHooks, TimedAction, run_load
from pbkv.bench.local_cluster import LocalCluster
from pbkv.bench.reach import preflight
from pbkv.bench.redis_pair import RedisPair
from pbkv.errors import PbkvError

ProgressCallback = Callable[[float, float, int], None]


class BenchError(PbkvError):
    """The benchmark could not be set up as asked (exit code 2)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class BenchOptions:
    spec: LoadSpec
    backend: str = "pbkv"
    viewserver: str = "127.0.0.1:7000"
    redis: str = "127.0.0.1:6379"
    local_cluster: bool = False
    cluster_dir: Path | None = None
    kill_primary_at_s: float | None = None
    primary_pid: int | None = None
    runs: int = 1
    timeout_s: float = 30.0

    def validate(self) -> None:
        """Raise ``BenchError`` for contradictory options."""
        if self.local_cluster and self.cluster_dir is not None:
            raise BenchError("--local-cluster and --cluster-dir exclude each other")
        if self.cluster_dir is not None and self.backend != "pbkv":
            raise BenchError("--cluster-dir names a pbkv cluster; use it with --backend pbkv")
        if self.kill_primary_at_s is not None:
            if self.kill_primary_at_s >= self.spec.duration_s:
                raise BenchError("--kill-primary-at must fall inside --duration")
            known = self.primary_pid is not None or self.local_cluster or self.cluster_dir
            if not known:
                raise BenchError(
                    "--kill-primary-at needs the primary's pid: give --primary-pid, "
                    "--local-cluster or --cluster-dir"
                )
        if self.runs < 1:
            raise BenchError("--runs must be at least 1")
        try:
            self.spec.validate()
        except ValueError as error:
            raise BenchError(str(error)) from None


@dataclass(slots=True)
class _Target:
    address: str
    primary_pid: int | None
    notes: list[str]


@contextlib.contextmanager
def _system(options: BenchOptions) -> Iterator[_Target]:
    """The system under test for one run, started and stopped here if asked."""
    if options.local_cluster and options.backend == "pbkv":
        with LocalCluster() as cluster:
            yield _Target(cluster.viewserver, cluster.primary().pid, ["local pbkv cluster"])
    elif options.local_cluster and options.backend == "redis":
        with RedisPair() as pair:
            yield _Target(pair.primary_address, pair.primary_pid, ["local Redis pair"])
    elif options.cluster_dir is not None:
        yield _cluster_dir_target(options.cluster_dir, options.kill_primary_at_s is not None)
    elif options.backend == "redis":
        yield _Target(options.redis, options.primary_pid, [])
    else:
        yield _Target(options.viewserver, options.primary_pid, [])


def _cluster_dir_target(directory: Path, need_primary: bool) -> _Target:
    from pbkv.cluster import targets
    from pbkv.cluster.state import load_state

    state = load_state(directory)
    pid = targets.resolve(state, "primary").pid if need_primary else None
    return _Target(state.viewserver, pid, [f"pbkv cluster in {directory}"])


def _kill_action(pid: int) -> Callable[[], None]:
    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    return kill


def run_once(options: BenchOptions, progress: ProgressCallback | None = None) -> LoadResult:
    """One run against the system ``options`` names.

    Raises:
        BenchError: the options contradict each other or the primary's pid is unknown.
        pbkv.bench.reach.Unreachable: the system does not answer (``reach.preflight``).
        RuntimeError, TimeoutError, OSError: the system or a generator process failed.
    """
    options.validate()
    with _system(options) as target:
        hooks = RunHooks(progress=progress, notes=list(target.notes))
        if options.kill_primary_at_s is not None:
            pid = options.primary_pid if options.primary_pid is not None else target.primary_pid
            if pid is None:
                raise BenchError("the primary's pid is unknown")
            hooks.timed_action = TimedAction(options.kill_primary_at_s, _kill_action(pid))
            hooks.notes.append(f"killed the primary (pid {pid}) with SIGKILL")
        preflight(options.backend, target.address)
        factory = backend_factory(options.backend, target.address, timeout_s=options.timeout_s)
        result = run_load(options.spec, factory, options.backend, hooks)
        if result.ops == 0:
            note = (
                f"no operation completed ({result.retries or 0:,} retries, {result.errors:,} "
                "errors): is the system serving, and does this command hold its secret?"
            )
            result = dataclasses.replace(result, notes=(*result.notes, note))
        return result


def median_summary(results: list[LoadResult]) -> dict[str, Any]:
    """Medians over repeated runs, and the totals that must not hide in a median."""
    resumed = [r.resumed_after_kill_ms for r in results if r.resumed_after_kill_ms is not None]
    retries = [r.retries for r in results]
    return {
        "runs": len(results),
        "ops_per_s": statistics.median(r.ops_per_s for r in results),
        "p50_ms": statistics.median(r.latency.p50_ns / 1e6 for r in results),
        "p99_ms": statistics.median(r.latency.p99_ns / 1e6 for r in results),
        "longest_gap_ms": statistics.median(r.longest_gap_ms for r in results),
        "longest_gap_ms_all": [r.longest_gap_ms for r in results],
        "resumed_after_kill_ms": statistics.median(resumed) if resumed else None,
        "errors_total": sum(r.errors for r in results),
        "retries_total": None if None in retries else sum(r or 0 for r in retries),
    }


def render_summary(summary: dict[str, Any]) -> str:
    gaps = ", ".join(f"{gap:,.0f}" for gap in summary["longest_gap_ms_all"])
    resumed = summary["resumed_after_kill_ms"]
    retries = summary["retries_total"]
    return "\n".join(
        [
            f"median of {summary['runs']} runs:",
            f"  throughput   {summary['ops_per_s']:,.0f} ops/s",
            f"  latency ms   p50 {summary['p50_ms']:.3f}  p99 {summary['p99_ms']:.3f}",
            f"  longest gap  {summary['longest_gap_ms']:,.0f} ms  (each run: {gaps})",
            "  resumed      "
            + ("-" if resumed is None else f"{resumed:,.0f} ms after the kill (median)"),
            f"  errors       {summary['errors_total']:,} in total",
            f"  retries      {'n/a' if retries is None else f'{retries:,}'} in total",
        ]
    )
