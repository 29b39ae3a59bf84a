"""The Markdown evidence file of a demo run (``pbkv demo --report FILE.md``).

It holds what a student hands in: the checks and whether they passed, the measured failover
times, the commands that reproduce each step by hand, the timeline of views, the workload's
size, the full narration, and for every fault the log lines of every process within one second
of it, read back from the processes' own log files.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pbkv.check.history import Operation
from pbkv.cluster.logs import LogEvent, format_ts, timeline, window
from pbkv.cluster.state import ClusterState
from pbkv.demo.context import Fault, Settings
from pbkv.demo.narration import Line
from pbkv.demo.verify import Check
from pbkv.demo.watch import ViewRecord

EXCERPT_RADIUS_S: Final = 1.0
EXCERPT_LINES_MAX: Final = 60
HISTORY_FILE_NAME: Final = "history.jsonl"
"""The recorded history, saved in the cluster directory."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """Everything the report is made of."""

    started_wall: float
    duration_s: float
    started_monotonic: float
    state: ClusterState
    settings: Settings
    scenarios: Sequence[str]
    lines: Sequence[Line]
    views: Sequence[ViewRecord]
    faults: Sequence[Fault]
    checks: Sequence[Check]
    history: Sequence[Operation]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def render(run: RunRecord) -> str:
    """The whole report as Markdown text."""
    passed = sum(1 for c in run.checks if c.ok)
    verdict = "PASSED" if run.checks and passed == len(run.checks) else "FAILED"
    settings = run.settings
    out = [
        "# pbkv demo report",
        "",
        f"Run at {format_ts(run.started_wall)} (UTC), took {run.duration_s:.1f} s. "
        f"Scenarios: {', '.join(run.scenarios)}. "
        f"Result: **{verdict}** ({passed}/{len(run.checks)} checks passed).",
        "",
        f"Cluster: a view service and {len(run.state.servers())} servers on 127.0.0.1; every "
        f"server pings every {settings.ping_interval_s:g} s and is declared dead after "
        f"{settings.dead_pings} missed pings ({settings.dead_after_s:.2f} s). Logs: "
        f"`{Path(run.state.processes[0].log_file).parent}/`.",
        "",
        "| process | address | started as | log file |",
        "|---|---|---|---|",
    ]
    for record in run.state.processes:
        out.append(
            f"| {record.name} | {record.address} | {record.role_at_start} | `{record.log_file}` |"
        )
    out += _checks(run) + _failovers(run) + _commands(run) + _views(run) + _workload(run)
    out += _narration(run) + _excerpts(run)
    return "\n".join(out) + "\n"


def _checks(run: RunRecord) -> list[str]:
    out = ["", "## Checks", "", "| result | what is promised | what was seen |", "|---|---|---|"]
    for check in run.checks:
        mark = "PASS" if check.ok else "**FAIL**"
        out.append(f"| {mark} | {_cell(check.name)} | {_cell(check.detail)} |")
    return out


def _failovers(run: RunRecord) -> list[str]:
    out = [
        "",
        "## Failover times",
        "",
        "Measured from the fault: *new view* is when the view service announced the next view, "
        "*serving* when its primary acknowledged it (its backup holds the complete state), "
        "*client wait* the longest stretch in which no client operation completed.",
        "",
        "| scenario | fault | views | new view | serving | client wait |",
        "|---|---|---|---|---|---|",
    ]
    for fault in run.faults:
        if fault.view_at is None and fault.stall_s is None:
            continue
        views = f"{fault.view_before} → {fault.new_view if fault.new_view else '-'}"
        out.append(
            f"| {fault.scenario} | {_cell(fault.label)} | {views} | {_seconds(fault.failover_s)} "
            f"| {_seconds(fault.serving_s)} | {_seconds(fault.stall_s)} |"
        )
    return out


def _commands(run: RunRecord) -> list[str]:
    out = [
        "",
        "## Commands run",
        "",
        "Each step as the `pbkv` command that does it by hand (`--dir` omitted).",
        "",
        "```sh",
    ]
    for line in run.lines:
        if line.kind == "command":
            out.append(f"{line.text[2:] if line.text.startswith('$ ') else line.text}")
    return [*out, "```"]


def _views(run: RunRecord) -> list[str]:
    out = [
        "",
        "## Timeline of views",
        "",
        "| view | primary | backup | seen at | acknowledged at |",
        "|---|---|---|---|---|",
    ]
    for record in run.views:
        view = record.view
        seen = record.seen_at - run.started_monotonic
        acked = (
            "-"
            if record.acknowledged_at is None
            else f"{record.acknowledged_at - run.started_monotonic:.2f} s"
        )
        name_p = _name(run.state, view.primary)
        name_b = _name(run.state, view.backup)
        out.append(f"| {view.number} | {name_p} | {name_b} | {seen:.2f} s | {acked} |")
    return out


def _name(state: ClusterState, address: str | None) -> str:
    if address is None:
        return "-"
    record = state.find(address)
    return f"{address} ({record.name})" if record else address


def _workload(run: RunRecord) -> list[str]:
    kinds = Counter(op.op for op in run.history)
    clients = sorted({op.client for op in run.history})
    indeterminate = sum(1 for op in run.history if op.complete is None)
    summary = ", ".join(f"{n} {kind}s" for kind, n in sorted(kinds.items()))
    return [
        "",
        "## Workload",
        "",
        f"{len(run.history)} operations recorded by {len(clients)} clients "
        f"({', '.join(clients)}): {summary}; {indeterminate} indeterminate (timed out: may or "
        "may not have taken effect). Every appended value is a unique token such as `[c2.17]`, "
        "so a lost or doubled write is visible in the data itself. The history is saved as "
        f"`{Path(run.state.directory) / HISTORY_FILE_NAME}`; check it again with "
        "`pbkv check-history`.",
    ]


def _narration(run: RunRecord) -> list[str]:
    return ["", "## Narration", "", "```", *(line.render() for line in run.lines), "```"]


def _excerpts(run: RunRecord) -> list[str]:
    logs = {p.name: Path(p.log_file) for p in run.state.processes}
    events = timeline(logs)
    out = [
        "",
        "## Log excerpts",
        "",
        f"Every process's event lines within {EXCERPT_RADIUS_S:g} s of each fault and each "
        "recovery step (restart, resume, heal), merged in time order (`pbkv cluster logs` "
        "prints the whole timeline).",
    ]
    for fault in run.faults:
        at = fault.at - run.started_monotonic
        out += ["", f"### {fault.scenario}: {fault.label} (at {at:.1f} s, {format_ts(fault.wall)})"]
        out += ["", "```"]
        out += _excerpt(window(events, fault.wall, EXCERPT_RADIUS_S))
        out.append("```")
    return out


def _excerpt(events: list[LogEvent]) -> list[str]:
    lines = [event.render() for event in events]
    if len(lines) > EXCERPT_LINES_MAX:
        more = len(lines) - EXCERPT_LINES_MAX
        lines = [*lines[:EXCERPT_LINES_MAX], f"... {more} more lines in the logs"]
    return lines or ["(no log lines in this window)"]


def write_report(path: Path, run: RunRecord) -> None:
    """Write the report (UTF-8), replacing ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(run)
    temporary = path.with_name(f".{path.name}.{int(time.time() * 1000)}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
