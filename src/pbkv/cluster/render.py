"""Text for people and for scripts: aligned tables, colours by role and by node.

Everything here returns plain strings with ANSI styles; ``click.echo`` strips the styles when
stdout is not a terminal, so piped output is plain, stable text (columns separated by at least
two spaces, one row per line, the header first) that scripts can split. Below the status table
come only lines ``NAME: WHY`` for the servers whose health says something is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

import click

from pbkv.cluster.logs import RAW_EVENT, LogEvent
from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.cluster.status import ClusterStatus, NodeStatus, view_summary_note
from pbkv.core.messages import cluster_label
from pbkv.tables import render_table

ROLE_COLOURS: Final = {
    "primary": "green",
    "backup": "cyan",
    "idle": "white",
    "viewserver": "magenta",
    "vs-leader": "magenta",
    "vs-follower": "white",
    "etcd": "blue",
}
STATE_COLOURS: Final = {"alive": "green", "paused": "yellow", "dead": "red"}
NODE_COLOURS: Final = ("magenta", "green", "cyan", "yellow", "blue", "red", "bright_green")
HIGHLIGHT_EVENTS: Final = frozenset(
    {
        "view_change",
        "role_change",
        "server_declared_dead",
        "state_transfer_done",
        "state_transfer_received",
        "forward_rejected",
        "forward_refused",
        "primary_role_refused",
    }
)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], styles: dict[str, str] | None = None
) -> str:
    """Columns aligned on the plain text, the header in capitals; a cell equal to a key of
    ``styles`` gets that colour (``pbkv.tables``, the one renderer)."""
    upper = [header.upper() for header in headers]
    return render_table(upper, rows, styles=styles or {}, bold_header=True)


def processes_table(records: Sequence[ProcessRecord], roles: dict[str, str]) -> str:
    """``name address pid role`` for ``up``, ``add`` and ``restart``."""
    rows = [[r.name, r.address, str(r.pid), roles.get(r.name, r.role_at_start)] for r in records]
    return table(["name", "address", "pid", "role"], rows, ROLE_COLOURS)


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def status_text(status: ClusterStatus) -> str:
    """The ``pbkv cluster status`` table with a one-line summary above it (the view, the
    failovers, the cluster id) and, below it, each server's complaint if any."""
    view = status.view
    if view is None:
        summary = _silent_summary(status)
    elif note := view_summary_note(view, status.viewserver, status.service):
        summary = note
    else:
        ack = "acknowledged" if status.acknowledged else "not yet acknowledged"
        summary = (
            f"view {view.number}: primary={view.primary or '-'} "
            f"backup={','.join(view.backups) or '-'} "
            f"({ack}); failovers so far: {status.failovers}; "
            f"cluster {cluster_label(status.cluster_id)}"
        )
    silent = view is None
    rows = [_status_row(node, silent) for node in status.nodes]
    headers = ["name", "address", "pid", "state", "role", "view", "keys", "last ping", "phase"]
    styles = dict(ROLE_COLOURS) | STATE_COLOURS
    complaints = [
        click.style(f"{node.record.name}: {node.health}", fg="yellow")
        for node in status.nodes
        if node.health
    ]
    if status.rotation:
        complaints.append(click.style(status.rotation, fg="yellow"))
    return "\n".join([summary, table(headers, rows, styles), *complaints])


def _silent_summary(status: ClusterStatus) -> str:
    """The summary while the view service does not answer: nobody can tell the current view,
    so the table shows what each server last heard (not a role the service gave it)."""
    states = {node.state for node in status.nodes if node.record.kind == "viewserver"}
    why = f" ({states.pop()})" if states in ({"paused"}, {"dead"}) else ""
    return (
        f"view service {status.viewserver} is not answering{why}: the current view is unknown; "
        "VIEW shows the last view each server heard of, and its role in it"
    )


def _status_row(node: NodeStatus, silent: bool = False) -> list[str]:
    """One process's row; ``silent``: the view service did not answer, so a server's VIEW says
    what it last heard itself ("2, primary (as it last knew)"), not a disagreement with it."""
    record = node.record
    age = "-" if node.last_ping_age_s is None else f"{node.last_ping_age_s:.2f}s"
    own_view = node.own_view_note or _dash(node.own_view)
    known = node.own_role is not None and not node.own_view_note  # no view: no role believed
    if known and silent:
        own_view += f", {node.own_role} (as it last knew)"
    elif known and node.role not in (node.own_role, "viewserver"):
        own_view += f" (thinks {node.own_role})"
    return [
        record.name,
        record.address,
        str(record.pid),
        node.state,
        node.role,
        own_view,
        _dash(node.keys),
        age,
        _dash(node.phase),
    ]


class EventPainter:
    """Colours each source (process) consistently across a whole timeline."""

    def __init__(self, sources: Sequence[str]) -> None:
        self.colours = {s: NODE_COLOURS[i % len(NODE_COLOURS)] for i, s in enumerate(sources)}

    def paint(self, event: LogEvent) -> str:
        text = event.render()
        colour = self.colours.get(event.source)
        if event.event == RAW_EVENT:
            return click.style(text, fg=colour, dim=True)
        bold = event.event in HIGHLIGHT_EVENTS
        return click.style(text, fg=colour, bold=bold)


def age(started_at: float) -> str:
    seconds = max(0.0, time.time() - started_at)
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"


def node_names(state: ClusterState) -> list[str]:
    return [p.name for p in state.processes]
