"""``pbkv dashboard``: serve the live web dashboard of a cluster until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import click

from pbkv.cli.names import CLUSTER_DIR_ENV
from pbkv.cli.node_commands import ADDRESS
from pbkv.cli.params import INTERVAL_S_MAX, FiniteFloat
from pbkv.runtime.config import parse_address

LISTEN_DEFAULT = "127.0.0.1:8080"


@click.command("dashboard")
@click.option(
    "--viewserver",
    type=ADDRESS,
    default=None,
    help="Watch this view service (any cluster; no fault buttons).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar=CLUSTER_DIR_ENV,
    help="Watch the local cluster of this directory, with fault buttons [default: .pbkv].",
)
@click.option(
    "--listen",
    type=ADDRESS,
    default=LISTEN_DEFAULT,
    show_default=True,
    help="Address of the web page (port 0: any free port).",
)
@click.option(
    "--poll-interval",
    type=FiniteFloat(0.05, INTERVAL_S_MAX),
    default=0.5,
    show_default=True,
    help="Seconds between two snapshots of the cluster.",
)
def dashboard(
    viewserver: str | None, directory: Path | None, listen: str, poll_interval: float
) -> None:
    """Serve a live web page of the cluster: view, nodes, failovers, throughput.

    \b
    Example:
      pbkv cluster up
      pbkv dashboard            # then open http://127.0.0.1:8080
      pbkv dashboard --viewserver 10.0.0.5:7000 --listen 0.0.0.0:8080
    """
    from pbkv.dashboard.server import DashboardLimits, serve
    from pbkv.dashboard.source import ClusterSource, Source, ViewServerSource

    source: Source
    if viewserver is not None and directory is None:
        source = ViewServerSource(viewserver)
    else:
        directory = directory or Path(".pbkv")
        source = ClusterSource(directory)
    host, port = parse_address(listen)
    limits = DashboardLimits(poll_interval_s=poll_interval)

    def listening(bound: int) -> None:
        click.echo(f"dashboard: http://{host}:{bound}/  (Ctrl-C stops it)", err=False)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(source, host, port, directory, limits, listening))


COMMANDS = [dashboard]
