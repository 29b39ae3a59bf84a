"""The Markdown evidence file of a demo run (``pbkv demo --report FILE.md``).

It holds what a student hands in: the machine and versions it ran on, the checks and whether
they passed, a picture of the client operations over time with every fault marked and the views
beneath (an SVG file beside the report), the measured failover times, the commands that
reproduce each step by hand, the timeline of views, the workload's size, a short benchmark of
the same cluster (with its own pictures), the full narration, and for every step the log lines
of every process from that step's fault (marked) to the next step, read back from the
processes' own log files.
"""

from __future__ import annotations

import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pbkv import __version__
from pbkv.bench.loadgen import LoadResult
from pbkv.bench.report import render_result
from pbkv.check.history import Operation
from pbkv.cluster.logs import CLUSTER_SOURCE, RAW_EVENT, LogEvent, format_ts, timeline
from pbkv.cluster.state import ClusterState
from pbkv.demo.context import Fault, Settings
from pbkv.demo.narration import Line
from pbkv.demo.plots import operations_chart
from pbkv.demo.verify import Check
from pbkv.demo.watch import ViewRecord
from pbkv.svg import render as render_svg

EXCERPT_LEAD_S: Final = 0.001
"""An excerpt starts this long before its step began (the step's own line, recorded by the
cluster layer just after the demo noted the step, is inside; so are no earlier lines)."""
EXCERPT_LAST_S: Final = 2.0
"""The last step's excerpt ends this long after its fault."""
EXCERPT_LINES_MAX: Final = 60
FAULT_MARK: Final = ">>"
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
    bench: LoadResult | None = None
    bench_note: str = ""


def pictures(path: Path) -> dict[str, Path]:
    """The SVG files written beside the report ``path`` (``FILE.md`` -> ``FILE-*.svg``)."""
    stem = path.with_suffix("")
    return {
        "operations": stem.with_name(f"{stem.name}-operations.svg"),
        "bench": stem.with_name(f"{stem.name}-bench.svg"),
        "bench-latency": stem.with_name(f"{stem.name}-bench-latency.svg"),
    }


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def render(run: RunRecord, images: dict[str, Path] | None = None) -> str:
    """The whole report as Markdown text; ``images`` are the pictures' files (linked by name,
    relative to the report)."""
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
    out += _environment() + _checks(run) + _picture(images) + _failovers(run) + _commands(run)
    out += _views(run) + _workload(run) + _bench(run, images) + _narration(run) + _excerpts(run)
    return "\n".join(out) + "\n"


def _environment() -> list[str]:
    return [
        "",
        f"Ran on {platform.platform()} ({platform.machine()}), Python "
        f"{platform.python_version()} ({sys.implementation.name}), pbkv {__version__}.",
    ]


def _picture(images: dict[str, Path] | None) -> list[str]:
    if not images:
        return []
    return [
        "",
        "## Operations over time",
        "",
        f"![client operations per second, faults marked, views beneath]"
        f"({images['operations'].name})",
        "",
        "Each dip is a fault at work: the workload's operations wait (and retry) until the view "
        "service has promoted the backup and the new primary's backup holds the state.",
    ]


def _bench(run: RunRecord, images: dict[str, Path] | None) -> list[str]:
    if run.bench is None:
        return ["", "## Benchmark", "", run.bench_note or "Not run."] if run.bench_note else []
    out = [
        "",
        "## Benchmark",
        "",
        "A short closed-loop run against the same cluster after the scenarios (the command that "
        "does the same: `pbkv bench --cluster-dir DIR --clients "
        f"{run.bench.spec.clients} --duration {run.bench.spec.duration_s:g} --write-ratio "
        f"{run.bench.spec.write_ratio:g} --plot bench.svg`). Numbers from a shared laptop-class "
        "machine: compare them with each other, not with other machines.",
        "",
        "```",
        render_result(run.bench),
        "```",
    ]
    if images:
        out += [
            "",
            f"![throughput over time]({images['bench'].name})",
            f"![latency percentiles]({images['bench-latency'].name})",
        ]
    return out


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
    faults_log = Path(run.state.directory) / "logs" / "cluster.log"
    if faults_log.exists():
        logs[CLUSTER_SOURCE] = faults_log
    events = [event for event in timeline(logs) if event.event != RAW_EVENT]
    out = [
        "",
        "## Log excerpts",
        "",
        "For each step (a fault, or a recovery step: restart, resume, heal), every process's "
        "event lines from the step to the next one, merged in cause-respecting time order "
        f"(`pbkv cluster logs` prints the whole timeline). `{FAULT_MARK}` marks the line of the "
        "step itself, as the cluster layer recorded it.",
    ]
    walls = [fault.wall for fault in run.faults]
    for index, fault in enumerate(run.faults):
        at = fault.at - run.started_monotonic
        end = walls[index + 1] - EXCERPT_LEAD_S if index + 1 < len(walls) else None
        step = step_events(events, fault.wall, end)
        out += ["", f"### {fault.scenario}: {fault.label} (at {at:.1f} s, {format_ts(fault.wall)})"]
        out += ["", "```", *_excerpt(step, fault.wall), "```"]
    return out


def step_events(events: Sequence[LogEvent], start: float, end: float | None) -> list[LogEvent]:
    """The events of one step: from just before its fault until just before the next step."""
    last = start + EXCERPT_LAST_S if end is None else end
    return [event for event in events if start - EXCERPT_LEAD_S <= event.ts < last]


def _excerpt(events: list[LogEvent], fault_wall: float) -> list[str]:
    marked = next(
        (e for e in events if e.source == CLUSTER_SOURCE and e.ts >= fault_wall - EXCERPT_LEAD_S),
        None,
    )
    lines = [f"{FAULT_MARK if e is marked else '  '} {e.render()}" for e in events]
    if len(lines) > EXCERPT_LINES_MAX:
        more = len(lines) - EXCERPT_LINES_MAX
        lines = [*lines[:EXCERPT_LINES_MAX], f"... {more} more lines in the logs"]
    return lines or ["(no log lines in this step)"]


def write_report(path: Path, run: RunRecord) -> None:
    """Write the report (UTF-8), replacing ``path``, and its pictures beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = pictures(path)
    chart = operations_chart(
        run.state, run.started_monotonic, run.duration_s, run.history, run.faults, run.views
    )
    images["operations"].write_text(render_svg(chart), encoding="utf-8")
    if run.bench is not None:
        from pbkv.bench.plots import latency_chart, throughput_chart

        images["bench"].write_text(render_svg(throughput_chart([run.bench])), encoding="utf-8")
        latency = render_svg(latency_chart([run.bench]))
        images["bench-latency"].write_text(latency, encoding="utf-8")
    text = render(run, images)
    temporary = path.with_name(f".{path.name}.{int(time.time() * 1000)}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
