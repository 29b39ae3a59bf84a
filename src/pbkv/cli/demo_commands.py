"""``pbkv demo``: the scripted failure demo against a real local cluster.

Exit codes: 0 every check passed, 1 a check failed (the narration says which), 2 bad usage,
130 interrupted. It never leaves a process running.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pbkv.demo.runner import DemoOptions, run_demo
from pbkv.demo.scenarios import DEFAULT_ORDER, SCENARIOS

SCENARIO_HELP = "\n".join(f"  {name:<20} {s.title}" for name, s in SCENARIOS.items())


@click.command("demo", epilog="\b\nScenarios (default: all, in this order):\n" + SCENARIO_HELP)
@click.argument("scenarios", nargs=-1, type=click.Choice(list(SCENARIOS)))
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
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
@click.option(
    "--ping-interval",
    type=click.FloatRange(0.01),
    default=0.05,
    show_default=True,
    help="Seconds between pings; a failover takes about --dead-pings of them.",
)
@click.option(
    "--dead-pings",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Missed pings before the view service declares a server dead.",
)
@click.option(
    "--base-port",
    type=click.IntRange(0, 65000),
    default=0,
    show_default=True,
    help="First port of the cluster (see `pbkv cluster up`); 0 picks free ports.",
)
@click.option(
    "--pace",
    type=click.FloatRange(0.0),
    default=1.0,
    show_default=True,
    help="Seconds the workload runs on its own between steps (0: as fast as possible).",
)
@click.option(
    "--clients", type=click.IntRange(1, 16), default=4, show_default=True, help="Workload clients."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the workload.")
def demo(
    scenarios: tuple[str, ...],
    report: Path | None,
    directory: Path,
    ping_interval: float,
    dead_pings: int,
    base_port: int,
    pace: float,
    clients: int,
    seed: int,
) -> None:
    """Start a cluster, run a live workload, break the cluster on purpose, verify, stop.

    Each step is narrated with the `pbkv` command that does the same by hand; view changes are
    shown as they happen. At the end every acknowledged write must be on the primary and the
    backup, none applied twice, and the recorded history linearizable.

    \b
    Example:
      pbkv demo
      pbkv demo primary-failure partition --report evidence.md
    """
    options = DemoOptions(
        scenarios=scenarios or DEFAULT_ORDER,
        directory=directory,
        report=report,
        base_port=base_port,
        ping_interval_s=ping_interval,
        dead_pings=dead_pings,
        pace_s=pace,
        clients=clients,
        seed=seed,
    )
    sys.exit(run_demo(options))


COMMANDS = [demo]
