"""``pbkv bench``: a closed-loop load generator against pbkv or Redis.

Exit codes: 0 the benchmark ran (its errors are in the report), 1 it failed while running,
2 bad usage or a system that cannot be started, 3 a system that does not answer (checked
before any generator starts, whatever named it: ``pbkv.bench.reach``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from pbkv.bench.backends import BACKEND_NAMES
from pbkv.bench.loadgen import LoadResult, LoadSpec
from pbkv.bench.report import render_result, result_json
from pbkv.bench.runner import (
    BenchOptions,
    ProgressCallback,
    median_summary,
    render_summary,
    run_once,
)
from pbkv.cli.names import default_viewserver
from pbkv.cli.params import FRACTION, SECONDS, SECONDS_OR_ZERO, writable_file
from pbkv.runtime.config import VIEWSERVER_DEFAULT, VIEWSERVER_ENV

REDIS_DEFAULT = "127.0.0.1:6379"


@contextmanager
def _progress_bar(enabled: bool, label: str, warmup_s: float) -> Iterator[ProgressCallback | None]:
    """A progress bar on stderr, refreshed by the generator's own calls (no extra thread)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[rate]}"),
        console=Console(stderr=True),
        auto_refresh=False,
        transient=True,
    )
    task = progress.add_task(label, total=1.0, rate="warming up")

    def update(elapsed_s: float, total_s: float, ops: int) -> None:
        measured_s = elapsed_s - warmup_s
        rate = f"{ops / measured_s:,.0f} ops/s" if measured_s > 0.1 else "warming up"
        progress.update(task, completed=elapsed_s / total_s, rate=rate, refresh=True)

    with progress:
        yield update


@click.command("bench")
@click.option(
    "--clients",
    type=click.IntRange(1, 10_000),
    default=16,
    show_default=True,
    help="Concurrent clients, each with one operation outstanding.",
)
@click.option(
    "--duration",
    "duration_s",
    type=SECONDS,
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Measured time (after --warmup).",
)
@click.option(
    "--warmup",
    "warmup_s",
    type=SECONDS_OR_ZERO,
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="Unmeasured load before it.",
)
@click.option(
    "--write-ratio",
    type=FRACTION,
    default=0.5,
    show_default=True,
    help="Fraction of operations that are writes; the rest are reads.",
)
@click.option(
    "--keys",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Keys are drawn uniformly from this many.",
)
@click.option(
    "--value-size",
    type=click.IntRange(min=0),
    default=64,
    show_default=True,
    metavar="BYTES",
    help="Size of every written value.",
)
@click.option(
    "--procs",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Generator processes the clients are split over.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKEND_NAMES),
    default="pbkv",
    show_default=True,
    help="System under test (null: no system, the generator's own ceiling).",
)
@click.option(
    "--viewserver",
    envvar=VIEWSERVER_ENV,
    default=default_viewserver,
    show_default=f"${VIEWSERVER_ENV}, the cluster in ./.pbkv, {VIEWSERVER_DEFAULT}",
    metavar="HOST:PORT",
    help="pbkv view service (as `pbkv put`: inside a cluster directory, that cluster's).",
)
@click.option(
    "--redis",
    "redis_address",
    default=REDIS_DEFAULT,
    show_default=True,
    metavar="HOST:PORT",
    help="Redis primary, for --backend redis.",
)
@click.option(
    "--local-cluster",
    is_flag=True,
    help="Start a local cluster (pbkv: view service + 2 servers; redis: primary + "
    "replica) for each run, and stop it after.",
)
@click.option(
    "--cluster-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Drive the `pbkv cluster` whose state is in DIR (e.g. .pbkv).",
)
@click.option(
    "--kill-primary-at",
    "kill_primary_at_s",
    type=SECONDS,
    default=None,
    metavar="SECONDS",
    help="SIGKILL the primary this far into the measured window and report the failover gap.",
)
@click.option(
    "--primary-pid",
    type=click.IntRange(min=1),
    default=None,
    metavar="PID",
    help="The primary's pid, for --kill-primary-at against a cluster started elsewhere.",
)
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Repeat the run (a fresh --local-cluster each time) and report medians.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=SECONDS,
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="pbkv client timeout per operation.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of key choice.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    callback=writable_file,
    metavar="FILE.svg",
    help="Draw throughput over time to FILE.svg and latency percentiles to FILE-latency.svg.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)
def bench(
    clients: int,
    duration_s: float,
    warmup_s: float,
    write_ratio: float,
    keys: int,
    value_size: int,
    procs: int,
    backend: str,
    viewserver: str,
    redis_address: str,
    local_cluster: bool,
    cluster_dir: Path | None,
    kill_primary_at_s: float | None,
    primary_pid: int | None,
    runs: int,
    timeout_s: float,
    seed: int,
    as_json: bool,
    plot: Path | None,
    progress: bool | None,
) -> None:
    """Measure throughput, latency and failover with a closed-loop load generator.

    Every client loops: pick a key, write (with probability --write-ratio) or read it, wait for
    the answer, record the latency. Percentiles are exact over all operations completed in the
    measured window. Redis writes are SET + WAIT 1 0 (on the replica before the client hears
    OK, as in pbkv).

    \b
    Examples:
      pbkv bench --clients 64 --duration 10 --write-ratio 1.0
      pbkv bench --local-cluster --kill-primary-at 2 --duration 5 --runs 5
      pbkv bench --local-cluster --kill-primary-at 2 --plot failover.svg
      pbkv bench --backend redis --redis 127.0.0.1:6379 --clients 64 --json
    """
    spec = LoadSpec(
        clients=clients,
        duration_s=duration_s,
        warmup_s=warmup_s,
        write_ratio=write_ratio,
        keys=keys,
        value_size=value_size,
        procs=min(procs, clients),
        seed=seed,
    )
    options = BenchOptions(
        spec=spec,
        backend=backend,
        viewserver=viewserver,
        redis=redis_address,
        local_cluster=local_cluster,
        cluster_dir=cluster_dir,
        kill_primary_at_s=kill_primary_at_s,
        primary_pid=primary_pid,
        runs=runs,
        timeout_s=timeout_s,
    )
    options.validate()
    show = sys.stderr.isatty() if progress is None else progress
    results: list[LoadResult] = []
    for index in range(runs):
        label = f"{backend} run {index + 1}/{runs}" if runs > 1 else backend
        with _progress_bar(show, label, warmup_s) as callback:
            result = run_once(options, callback)
        results.append(result)
        if not as_json:
            click.echo(render_result(result))
    summary = median_summary(results) if runs > 1 else None
    if as_json:
        document = {"runs": [result_json(r) for r in results], "median": summary}
        click.echo(json.dumps(document if runs > 1 else result_json(results[0]), indent=2))
    elif summary is not None:
        click.echo(render_summary(summary))
    if plot is not None:
        from pbkv.bench.plots import write_plots

        written = write_plots(plot, results)
        click.echo(f"plots: {', '.join(map(str, written))}", err=as_json)


COMMANDS = [bench]
