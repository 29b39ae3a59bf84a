"""``pbkv cluster`` commands that look at the cluster without changing it: ``logs`` (one
timeline of every process's event lines) and ``probe`` (one raw get straight to a server,
bypassing the client library, to see what that server itself answers).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from pbkv.cli.exits import EXIT_REFUSED, EXIT_UNAVAILABLE
from pbkv.cli.names import cluster_dir_option
from pbkv.cli.params import SECONDS_MAX, FiniteFloat
from pbkv.cluster import targets as cluster_targets
from pbkv.cluster.logs import LogFollower, iter_events, timeline
from pbkv.cluster.render import EventPainter
from pbkv.cluster.rpc import probe_get
from pbkv.cluster.state import ClusterState, load_state

FOLLOW_POLL_S = 0.2


@click.command("logs")
@cluster_dir_option
@click.argument("targets", nargs=-1)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option(
    "--event",
    "events",
    multiple=True,
    help="Only these events (repeatable), e.g. --event view_change.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def logs_command(
    directory: Path, targets: tuple[str, ...], follow: bool, events: tuple[str, ...], as_json: bool
) -> None:
    """One timeline of every process's event lines, in time order, coloured by process.

    TARGETS limit it to some processes (s1, viewserver, primary, an address ...).

    \b
    Example:
      pbkv cluster logs
      pbkv cluster logs viewserver --event view_change
      pbkv cluster logs --follow
    """
    import json

    state: ClusterState | None = None
    if (directory / "cluster.json").exists() or not cluster_targets.logs_on_disk(directory):
        state = load_state(directory)
    if state is not None:
        names = [cluster_targets.resolve(state, t).name for t in targets]
        logs = cluster_targets.log_files(state)
    else:  # the cluster is down: its logs are still there
        logs = cluster_targets.logs_on_disk(directory)
        names = cluster_targets.names_on_disk(directory, logs, targets)
    painter = EventPainter(list(logs))
    seen: set[str] = set()

    def show(batch: list[Any]) -> None:
        for event in iter_events(batch, names):
            seen.add(event.event)
            if events and event.event not in events:
                continue
            click.echo(
                json.dumps(event.to_json(), sort_keys=True) if as_json else painter.paint(event)
            )

    if not follow:
        show(timeline(logs))
        _note_unseen_events(events, seen)
        return
    follower = LogFollower(logs)
    while True:  # until Ctrl-C: exit 130, interrupted
        show(follower.poll())
        time.sleep(FOLLOW_POLL_S)


def _note_unseen_events(wanted: tuple[str, ...], seen: set[str]) -> None:
    """A line on stderr for each ``--event`` no line has, with the closest event names that
    are there (a typo printed nothing at all, exit 0, as if the event had not happened)."""
    import difflib

    for name in wanted:
        if name not in seen:
            close = difflib.get_close_matches(name, sorted(seen), n=3)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            click.echo(f"pbkv: no line has the event {name}{hint}", err=True)


@click.command("probe")
@cluster_dir_option
@click.argument("target")
@click.argument("key")
@click.option(
    "--timeout",
    "timeout_s",
    type=FiniteFloat(0.01, SECONDS_MAX),
    default=1.0,
    show_default=True,
    help="Seconds to wait for the answer.",
)
def probe_command(directory: Path, target: str, key: str, timeout_s: float) -> None:
    """Send one raw get for KEY straight to TARGET, bypassing the client library.

    No retry, no view lookup: it shows what that server itself answers - `ok: 'VALUE'` (or
    `ok: no such key`) if it serves as primary (exit 0), `wrong_server` if it is not (or no
    longer) the serving primary (exit 4, refused), `no answer` if it is paused, partitioned
    from us or dead (exit 3).

    \b
    Example:
      pbkv cluster probe s1 greeting
    """
    state = load_state(directory)
    record = cluster_targets.resolve(state, target)
    answer = probe_get(record.address, key, timeout_s)
    click.echo(f"{record.name} {record.address}: {answer}")
    if answer == "no answer":
        sys.exit(EXIT_UNAVAILABLE)
    if not answer.startswith("ok"):
        sys.exit(EXIT_REFUSED)


OBSERVE_COMMANDS = [logs_command, probe_command]
