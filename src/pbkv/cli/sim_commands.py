"""``pbkv sim``: run the deterministic simulator for one seed or sweep many.

Exit codes: 0 no violation, 1 a violation was found (each failing seed's replay line is printed),
2 usage error, 5 a sweep's worker process was lost.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, Final

import click

from pbkv.cli.params import FRACTION, FiniteFloat
from pbkv.core.view_service import BACKUPS_MAX
from pbkv.sim import (
    Overrides,
    RunResult,
    SweepSummary,
    run_simulation,
    shrink,
    sweep,
)
from pbkv.sim.sweep import JOBS_PER_CPU_MAX

EXIT_CLEAN: Final = 0
EXIT_VIOLATION: Final = 1
SHRINK_IN_SWEEP_MAX: Final = 3
JOBS_MAX: Final = 256

_RATE = FRACTION
_PER_KILOTICK = FiniteFloat(0.0, 100.0)
_POSITIVE = click.IntRange(min=1)

OVERRIDE_OPTIONS: Final[list[Callable[[Any], Any]]] = [
    click.option("--servers", type=click.IntRange(1, 16), help="Replicas (default: drawn)."),
    click.option(
        "--backups",
        type=click.IntRange(1, BACKUPS_MAX),
        help="K, backups per view (default: drawn from 1, 1, 2, 3).",
    ),
    click.option("--clients", type=click.IntRange(1, 64), help="Clients (default: drawn)."),
    click.option("--keys", type=click.IntRange(1, 64), help="Keys (default: drawn)."),
    click.option("--ops", type=_POSITIVE, help="Operations per client (default: drawn)."),
    click.option("--ticks", type=_POSITIVE, help="Length of the fault phase (default 2000)."),
    click.option("--timeout-ticks", type=_POSITIVE, help="Client operation timeout."),
    click.option("--drop-rate", type=_RATE, help="Probability a message is lost."),
    click.option("--duplicate-rate", type=_RATE, help="Probability a message is duplicated."),
    click.option("--reorder-rate", type=_RATE, help="Probability of an extra, reordering delay."),
    click.option("--crash-rate", type=_PER_KILOTICK, help="Server crashes per 1000 ticks."),
    click.option("--pause-rate", type=_PER_KILOTICK, help="Node pauses per 1000 ticks."),
    click.option("--partition-rate", type=_PER_KILOTICK, help="Partitions per 1000 ticks."),
    click.option(
        "--view-service-crash-rate", type=_PER_KILOTICK, help="View service crashes per 1000 ticks."
    ),
    click.option(
        "--view-service-disk-loss",
        type=_RATE,
        help="Probability a view service crash loses its disk.",
    ),
    click.option("--client-crash-rate", type=_PER_KILOTICK, help="Client crashes per 1000 ticks."),
    click.option(
        "--stale-restart-rate",
        type=_PER_KILOTICK,
        help="Server restarts with its last messages delayed past the restart, per 1000 ticks.",
    ),
    click.option(
        "--hostile-rate",
        type=FiniteFloat(0.0, 1000.0),
        help="Oversized raw requests per 1000 ticks.",
    ),
    click.option(
        "--forge-rate", type=FiniteFloat(0.0, 1000.0), help="Forged messages per 1000 ticks."
    ),
    click.option(
        "--cluster-crash-rate",
        type=_PER_KILOTICK,
        help="Whole-cluster crashes (every server and the view service) per 1000 ticks.",
    ),
    click.option(
        "--disk",
        type=click.Choice(["none", "always", "everysec", "no"]),
        help="Replicas' disks: none, or the fsync policy (default: drawn).",
    ),
    click.option("--disk-slow-rate", type=_RATE, help="Probability a sync is slow."),
    click.option("--disk-torn-rate", type=_RATE, help="Probability a crash tears the last frame."),
    click.option(
        "--disk-damage-rate", type=_RATE, help="Probability a restart finds a damaged log."
    ),
    click.option(
        "--disk-wipe-rate",
        type=_RATE,
        help="Probability the operator wipes a damaged disk (else the node stays down).",
    ),
    click.option(
        "--disk-foreign-rate",
        type=_RATE,
        help="Probability a restart finds another cluster's disk in the server's place.",
    ),
    click.option(
        "--disk-repair-rate",
        type=_RATE,
        help="Probability the operator restarts a refused damaged log with --repair.",
    ),
    click.option(
        "--other-limits-rate",
        type=_RATE,
        help="Probability a server's restart uses other size limits than the cluster's.",
    ),
    click.option("--faults-max", type=click.IntRange(min=0), help="Keep only the first N faults."),
    click.option("--no-faults", is_flag=True, help="No faults at all (delays only)."),
    click.option(
        "--probe-open-holes",
        is_flag=True,
        help="Also the faults that reach the core's known open holes (see docs/simulator.md).",
    ),
    click.option(
        "--read-leases",
        is_flag=True,
        help="Primary read leases on; each node's clock drifts within the bound (R1).",
    ),
    click.option(
        "--clock-drift-max",
        type=FiniteFloat(0.0, 0.49),
        help="The drift bound the view service assumes with --read-leases (default 0.01).",
    ),
    click.option(
        "--clock-drift",
        type=FiniteFloat(0.0, 0.9),
        help="The drift the clocks really have (default: the bound); above it, leases break.",
    ),
    click.option(
        "--lasting-cut",
        is_flag=True,
        help="Keep the primary cut from a backup after healing (N5; default: 1 run in 5).",
    ),
]


def _with_overrides(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(OVERRIDE_OPTIONS):
        command = option(command)
    return command


@click.command("sim")
@click.option("--seed", type=int, help="Run this one seed and print what happened.")
@click.option("--seeds", "count", type=_POSITIVE, help="Sweep this many seeds.")
@click.option("--first-seed", type=int, default=1, show_default=True, help="First seed of a sweep.")
@click.option(
    "--jobs",
    type=click.IntRange(1, JOBS_MAX),
    default=1,
    show_default=True,
    help=f"Sweep processes, 1 to {JOBS_MAX}; no more start than {JOBS_PER_CPU_MAX} per CPU "
    "and one per seed.",
)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the event log of --seed as JSON lines.",
)
@click.option(
    "--history",
    "history_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the client history of --seed (the pbkv check-history format).",
)
@click.option(
    "--shrink/--no-shrink",
    "shrink_failures",
    default=True,
    show_default=True,
    help="Look for a smaller failing run.",
)
@_with_overrides
def sim(
    seed: int | None,
    count: int | None,
    first_seed: int,
    jobs: int,
    trace_path: Path | None,
    history_path: Path | None,
    shrink_failures: bool,
    **override_values: Any,
) -> None:
    """Run the deterministic simulator: the real core on a seeded network with faults.

    \b
    Each run: a fault phase (crashes, restarts, pauses, partitions, loss, duplication,
    reordering, drawn from the seed), then healing, a liveness phase and a final read of every
    key; safety checks after every step and a linearizability check of the whole history.

    \b
    Exit codes: 0 no violation, 1 violation (replay lines printed), 2 usage error,
    5 a sweep worker process was lost.

    \b
    Examples:
      pbkv sim --seed 42                      one run, printing parameters and outcome
      pbkv sim --seed 42 --trace run.jsonl    the same run with its event log
      pbkv sim --seeds 1000 --jobs 2          a sweep with a summary
    """
    if (seed is None) == (count is None):
        raise click.UsageError("give exactly one of --seed N or --seeds N")
    if count is not None and (trace_path is not None or history_path is not None):
        raise click.UsageError("--trace and --history apply to a single --seed run")
    overrides = Overrides(**override_values)
    if seed is not None:
        code = _run_single(seed, overrides, trace_path, history_path, shrink_failures)
    else:
        assert count is not None
        code = _run_sweep(first_seed, count, overrides, jobs, shrink_failures)
    sys.exit(code)


def _replayer(seed: int, overrides: Overrides) -> RunResult:
    return run_simulation(seed, overrides)


def _run_single(
    seed: int,
    overrides: Overrides,
    trace_path: Path | None,
    history_path: Path | None,
    shrink_failure: bool,
) -> int:
    with ExitStack() as stack:
        trace: IO[str] | None = None
        history: IO[str] | None = None
        if trace_path is not None:
            trace = stack.enter_context(trace_path.open("w", encoding="utf-8"))
        if history_path is not None:
            history = stack.enter_context(history_path.open("w", encoding="utf-8"))
        result = run_simulation(seed, overrides, trace_stream=trace, history_stream=history)
    click.echo(f"seed {seed}: {result.params.describe()}")
    click.echo(describe_outcome(result))
    if not result.failed:
        return EXIT_CLEAN
    click.echo(describe_failure(result))
    if shrink_failure:
        smaller = shrink(result, _replayer)
        if smaller is not result:
            click.echo(f"shrunk to: {smaller.replay}")
            click.echo(f"  ({smaller.params.describe()})".replace("\n", "\n   "))
    return EXIT_VIOLATION


def describe_outcome(result: RunResult) -> str:
    stats = result.stats
    head = {
        "ok": "ok",
        "unavailable": "unavailable as documented",
        "lost": "writes lost as documented",
        "violation": "VIOLATION",
    }
    return (
        f"outcome: {head[result.outcome]}"
        + (f" ({result.detail})" if result.outcome in ("unavailable", "lost") else "")
        + f"\n  {stats.ticks} ticks, {stats.deliveries} deliveries, {stats.messages_sent} sent, "
        f"{stats.messages_lost} lost; {stats.operations} operations ({stats.completed} completed, "
        f"{stats.indeterminate} indeterminate); {stats.views} views; "
        f"{stats.faults_fired} of {stats.fault_events} fault events fired; "
        f"linearizability {stats.linearizability}; {stats.elapsed_s:.2f} s"
        + (
            f"\n  disk {stats.disk}: {stats.cluster_crashes} whole-cluster crashes, "
            f"{stats.frames_lost} unsynced frames lost, {stats.torn_tails} torn tails, "
            f"{stats.refused_starts} refused starts, {stats.wiped} wiped"
            if stats.disk != "none"
            else ""
        )
        + f"\n  trace hash {result.digest}"
    )


def describe_failure(result: RunResult) -> str:
    lines = [f"failed check: {result.check}", *result.detail.splitlines(), "last events:"]
    lines += [f"  {line}" for line in result.recent]
    lines.append(f"replay: {result.replay}")
    lines.append(f"every event: {result.replay} --trace run.jsonl --history history.jsonl")
    return "\n".join(lines)


def _run_sweep(
    first_seed: int, count: int, overrides: Overrides, jobs: int, shrink_failures: bool
) -> int:
    summary = _sweep_with_progress(first_seed, count, overrides, jobs)
    click.echo(summary.render())
    if summary.violations and shrink_failures:
        for result in summary.violations[:SHRINK_IN_SWEEP_MAX]:
            smaller = shrink(result, _replayer)
            if smaller is not result:
                click.echo(f"  seed {result.seed} shrunk to: {smaller.replay}")
    return EXIT_VIOLATION if summary.violations else EXIT_CLEAN


def _sweep_with_progress(
    first_seed: int, count: int, overrides: Overrides, jobs: int
) -> SweepSummary:
    if not sys.stdout.isatty():
        return sweep(first_seed, count, overrides, jobs, _report_violation)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("seeds", total=count)
        failures = 0

        def advance(result: RunResult) -> None:
            nonlocal failures
            if result.failed:
                failures += 1
                progress.console.print(f"seed {result.seed}: {result.check}: {result.replay}")
            progress.update(task, advance=1, description=f"seeds ({failures} failing)")

        return sweep(first_seed, count, overrides, jobs, advance)


def _report_violation(result: RunResult) -> None:
    if result.failed:
        click.echo(f"seed {result.seed}: {result.check}: {result.replay}")


COMMANDS = [sim]
