"""``pbkv demo``: the scripted failure demo against a real local cluster.

Exit codes: 0 every check passed, 1 a check failed (the narration says which), 2 bad usage,
130 interrupted. It never leaves a process running.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import click

from pbkv.cli.cluster_commands import timing_options
from pbkv.cli.params import INTERVAL_S_MAX, SECONDS_OR_ZERO, FiniteFloat, writable_file
from pbkv.cluster.manager import SERVERS_MAX
from pbkv.core.view_service import BACKUPS_MAX
from pbkv.demo.runner import DEMO_PING_INTERVAL_S, DemoOptions, run_demo
from pbkv.demo.scenarios import DEFAULT_ORDER, ETCD_ONLY, K2_ONLY, SCENARIOS

SCENARIO_HELP = "\n".join(f"  {name:<20} {s.title}" for name, s in SCENARIOS.items())


@click.command("demo")
@click.argument("scenarios", nargs=-1, type=click.Choice(list(SCENARIOS)), metavar="[SCENARIO]...")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    callback=writable_file,
    help="Write a Markdown evidence file: commands, views, failover times, log excerpts, checks.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".pbkv/demo"),
    show_default=True,
    help="Directory of the demo cluster's state and logs (kept afterwards).",
)
@timing_options(DEMO_PING_INTERVAL_S, 0)
@click.option(
    "--pace",
    type=FiniteFloat(0.0, INTERVAL_S_MAX),
    default=1.0,
    show_default=True,
    help="Seconds the workload runs on its own between steps (0: as fast as possible).",
)
@click.option(
    "--clients", type=click.IntRange(1, 16), default=4, show_default=True, help="Workload clients."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the workload.")
@click.option(
    "--bench-seconds",
    type=SECONDS_OR_ZERO,
    default=2.0,
    show_default=True,
    help="With --report: seconds of the short benchmark it records (0: none).",
)
@click.option(
    "--etcd",
    is_flag=True,
    help="Replicate the view service on a local 3-member etcd and add coordinator-failure "
    "(implied when that scenario is named).",
)
@click.option(
    "--servers", type=click.IntRange(2, SERVERS_MAX), default=3, show_default=True, help="Servers."
)
@click.option(
    "--backups",
    type=click.IntRange(1, BACKUPS_MAX),
    default=1,
    show_default=True,
    help="K, backups per view; 2 (with --servers 4) adds double-failure.",
)
@click.option(
    "--read-leases",
    is_flag=True,
    help="The primary answers reads alone while it holds a lease (pbkv cluster up "
    "--read-leases); the partition and pause scenarios check it never answers a stale read.",
)
def demo(
    scenarios: tuple[str, ...],
    report: Path | None,
    directory: Path,
    base_port: int,
    ping_interval: float,
    dead_pings: int,
    pace: float,
    clients: int,
    seed: int,
    bench_seconds: float,
    etcd: bool,
    servers: int,
    backups: int,
    read_leases: bool,
) -> None:
    """Start a cluster, run a live workload, break the cluster on purpose, verify, stop.

    Each step is narrated with the `pbkv` command that does the same by hand; view changes are
    shown as they happen. At the end every acknowledged write must be on the primary and the
    backup, none applied twice, and the recorded history linearizable.

    \b
    Example:
      pbkv demo
      pbkv demo primary-failure partition --report evidence.md
      pbkv demo --etcd coordinator-failure --report evidence.md
      pbkv demo --servers 4 --backups 2 double-failure --report evidence.md
    """
    etcd = etcd or any(name in ETCD_ONLY for name in scenarios)
    if any(name in K2_ONLY for name in scenarios) and (backups < 2 or servers < 4):
        raise click.UsageError("double-failure needs --servers 4 --backups 2 (or more)")
    extra = K2_ONLY if backups >= 2 and servers >= 4 else ()
    options = DemoOptions(
        scenarios=scenarios or (*DEFAULT_ORDER, *(ETCD_ONLY if etcd else ()), *extra),
        etcd=etcd,
        directory=directory,
        report=report,
        base_port=base_port,
        ping_interval_s=ping_interval,
        dead_pings=dead_pings,
        pace_s=pace,
        clients=clients,
        seed=seed,
        bench_s=bench_seconds,
        servers=servers,
        backups=backups,
        read_leases=read_leases,
    )
    sys.exit(run_demo(options))


# Cleaned first: click dedents the help as one text, and the scenario lines start at column 0.
demo.help = (
    f"{inspect.cleandoc(demo.help or '')}\n\n\b\nScenarios (default: all in this order; "
    f"coordinator-failure only with --etcd):\n{SCENARIO_HELP}"
)


COMMANDS = [demo]
