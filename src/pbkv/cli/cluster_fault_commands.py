"""``pbkv cluster`` commands that break the network or a disk on purpose (and heal them).

Each sends admin orders to the processes involved (``pbkv.cluster.faults``). ``partition``,
``isolate`` and ``heal`` then say in a few lines who no longer hears whom, what the cluster will
do about it and where to watch (``pbkv.cluster.fault_notes``); the others print one line per
order done. A process that does not take its order is a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import click

from pbkv.cli.names import cluster_dir_option
from pbkv.cli.params import DELAY_MS, FRACTION, SEED
from pbkv.cluster import fault_notes, processes
from pbkv.cluster import faults as cluster_faults
from pbkv.cluster.state import load_state
from pbkv.cluster.status import STATUS_TIMEOUT_S
from pbkv.cluster.targets import current_view, resolve


def _echo_orders(done: list[str]) -> None:
    for line in done:
        click.echo(line)


@click.command("partition")
@cluster_dir_option
@click.argument("a")
@click.argument("b")
@click.option("--one-way", is_flag=True, help="Cut only A -> B; B still reaches A.")
def partition_command(directory: Path, a: str, b: str, one_way: bool) -> None:
    """Cut the network links between A and B (servers or the view service).

    Client traffic is never cut. Undo with `heal`.

    \b
    Example:
      pbkv cluster partition primary viewserver
      pbkv cluster partition s1 s2 --one-way
    """
    state = load_state(directory)
    first, second = resolve(state, a), resolve(state, b)
    view = current_view(state, STATUS_TIMEOUT_S)  # the roles at the moment of the cut
    cluster_faults.partition(state, first.name, second.name, one_way)
    _echo_orders(fault_notes.partition_notes(state, first, second, one_way, view))


@click.command("isolate")
@cluster_dir_option
@click.argument("a")
def isolate_command(directory: Path, a: str) -> None:
    """Cut A from every other process of the cluster (clients still reach it).

    \b
    Example:
      pbkv cluster isolate primary
    """
    state = load_state(directory)
    target = resolve(state, a)
    view = current_view(state, STATUS_TIMEOUT_S)
    cluster_faults.isolate(state, target.name)
    _echo_orders(fault_notes.isolate_notes(state, target, view))


@click.command("heal")
@cluster_dir_option
def heal_command(directory: Path) -> None:
    """Remove every partition and unreliability from every running process.

    \b
    Example:
      pbkv cluster heal
    """
    state = load_state(directory)
    dead = [p for p in state.processes if processes.process_state(p.pid, p.argv) == "dead"]
    cluster_faults.heal(state)
    healed = [p for p in state.processes if p not in dead]
    _echo_orders(fault_notes.heal_notes(state, healed, dead))


@click.command("unreliable")
@cluster_dir_option
@click.argument("target")
@click.option(
    "--drop",
    type=FRACTION,
    default=0.0,
    show_default=True,
    help="Probability of dropping each message it sends.",
)
@click.option(
    "--delay-ms",
    type=DELAY_MS,
    default=0.0,
    show_default=True,
    help="Delay each message it sends by up to this many ms.",
)
@click.option(
    "--seed",
    type=SEED,
    default=None,
    help="Seed of the drop/delay draws (reproducible runs), 0 to 2**63-1.",
)
def unreliable_command(
    directory: Path, target: str, drop: float, delay_ms: float, seed: int | None
) -> None:
    """Make TARGET (or `all`) drop and delay the messages it sends. Undo with `heal`.

    \b
    Example:
      pbkv cluster unreliable primary --drop 0.1 --delay-ms 5
      pbkv cluster unreliable all --drop 0.05
    """
    state = load_state(directory)
    _echo_orders(cluster_faults.unreliable(state, target, drop, delay_ms, seed))


@click.command("slow-disk")
@cluster_dir_option
@click.argument("target")
@click.option(
    "--ms",
    "delay_ms",
    type=DELAY_MS,
    required=True,
    help="Milliseconds added to every fsync of its data directory (0: normal again).",
)
def slow_disk_command(directory: Path, target: str, delay_ms: float) -> None:
    """Make every fsync of server TARGET (or `all` servers) slower. Undo with `heal`.

    With --fsync always the server waits for each fsync, its pings too: a delay near the dead
    interval makes the view service judge it dead (docs/protocol.md N6). Its log says
    disk_sync_slow. Needs servers with a data directory (`pbkv cluster up --durable`).

    \b
    Example:
      pbkv cluster slow-disk primary --ms 800
      pbkv cluster slow-disk all --ms 0
    """
    state = load_state(directory)
    _echo_orders(cluster_faults.slow_disk(state, target, delay_ms))


FAULT_COMMANDS = [
    partition_command,
    isolate_command,
    heal_command,
    unreliable_command,
    slow_disk_command,
]
