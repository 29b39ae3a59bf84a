"""``make bench``: pbkv and Redis side by side, one table.

Theory of operation. Both systems are started once and stay up for the whole matrix: a pbkv
view service, primary and backup (``LocalCluster``), and a Redis primary and replica
(``RedisPair``, writes as ``SET`` + ``WAIT 1 0``). The idle system costs next to nothing (pbkv
servers ping ten times a second; Redis sleeps). For every cell — clients x write ratio — the
same load generator drives Redis, then pbkv (the order alternates from cell to cell), so both
see the same machine at nearly the same moment: on a shared two-core machine, background load
drifts, and this keeps it out of the ratio. With ``--repeat N`` each cell is run N times per
system and the run with the median throughput is kept.

CPU use of the generator and of each server is measured per run (``pbkv.bench.cpu``); it shows
which process was the bottleneck. The table is printed; ``--record FILE`` also replaces the
section between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` of FILE with the table,
the date, the machine and the command.

Usage::

    python -m pbkv.bench.suite --duration 5 --record docs/performance.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pbkv import build
from pbkv.bench.backends import backend_factory
from pbkv.bench.cpu import GENERATOR, OTHERS, CpuMeter, wait_until_quiet
from pbkv.bench.loadgen import LoadResult, LoadSpec, run_load
from pbkv.bench.local_cluster import LocalCluster
from pbkv.bench.redis_pair import RedisPair
from pbkv.bench.report import (
    Comparison,
    comparison_json,
    evaluate_targets,
    render_comparison,
    render_table,
    render_verdicts,
)

DURATION_ENV: Final = "BENCH_DURATION"
DURATION_DEFAULT_S: Final = 5.0
CLIENTS_DEFAULT: Final = (1, 16, 64)
WRITE_RATIOS_DEFAULT: Final = (1.0, 0.5)
PROCS_HIGH_DEFAULT: Final[dict[str, int | None]] = {"pbkv": None, "redis": 1}
"""Generator processes per system for cells with more than one client (None: the suite's rule,
``generator_processes``)."""


def generator_processes(
    system: str,
    clients: int,
    write_ratio: float,
    read_leases: bool,
    procs_high: Mapping[str, int | None],
) -> int:
    """Generator processes for one cell: one for one client, else ``procs_high[system]`` when
    set, else each system's faster choice as measured on the 2-core machine (docs/
    performance.md, "Choosing --procs"). Redis: 1 (its generator is cheap per operation, and a
    second process only takes CPU from Redis). pbkv: 2 (its clients share one connection per
    process, and two keep more of them busy), except where its reads are leased and mixed with
    writes: there its replies come back in two waves, reads at once and writes a round trip
    later, and one process, whose one connection carries both waves of all the clients, wakes
    half as often per operation (every round measured on 2026-12-03)."""
    if clients == 1:
        return 1
    chosen = procs_high.get(system)
    if chosen is None:
        leased_mix = system == "pbkv" and read_leases and 0.0 < write_ratio < 1.0
        chosen = 1 if system != "pbkv" or leased_mix else 2
    return min(chosen, clients)


def describe_processes(procs_high: Mapping[str, int | None]) -> str:
    """The record's words for ``generator_processes``."""
    pbkv, redis = procs_high.get("pbkv"), procs_high.get("redis")
    pbkv_words = "2 (1 where its reads are leased and mixed with writes)" if pbkv is None else pbkv
    redis_words = 1 if redis is None else redis
    return (
        f"generator processes: 1 for 1 client, otherwise {pbkv_words} for pbkv and "
        f"{redis_words} for Redis"
    )


COMMAND_ENV: Final = "PBKV_BENCH_COMMAND"
"""How the suite was invoked, for the record (``scripts/bench.sh`` sets ``make bench``)."""
RECORD_BEGIN: Final = "<!-- bench:begin -->"
RECORD_END: Final = "<!-- bench:end -->"


def markers(
    fsync: str | None, read_leases: bool = False, backups: int = 1, compiled: bool = False
) -> tuple[str, str]:
    """The marks around the recorded section: one section per durability mode, one for read
    leases (in memory), one per number of backups above one (in memory); each once more for
    the compiled build (``-compiled``)."""
    if backups > 1:
        name = f"bench-backups-{backups}"
    elif read_leases:
        name = "bench-leases"
    elif fsync is None:
        name = "bench"
    else:
        name = f"bench-fsync-{fsync}"
    if compiled:
        name += "-compiled"
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


@dataclass(frozen=True, slots=True)
class Measured:
    result: LoadResult
    cpu: dict[str, float]


@dataclass(frozen=True, slots=True)
class Cell:
    comparison: Comparison
    pbkv_cpu: dict[str, float]
    redis_cpu: dict[str, float]


class Systems:
    """Both systems, up for the whole matrix."""

    def __init__(
        self,
        fsync: str | None = None,
        read_leases: bool = False,
        backups: int = 1,
        busy_poll_us: int = 0,
    ) -> None:
        viewserver_args: tuple[str, ...] = ("--read-leases",) if read_leases else ()
        viewserver_args += ("--backups", str(backups)) if backups > 1 else ()
        server_args = ("--busy-poll-us", str(busy_poll_us)) if busy_poll_us else ()
        self.backups = backups
        self.read_leases = read_leases
        self.cluster = LocalCluster(
            servers=backups + 1,
            fsync=fsync,
            extra_server_args=server_args,
            extra_viewserver_args=viewserver_args,
        )
        self.redis = RedisPair(appendfsync=fsync, replicas=backups)

    def __enter__(self) -> Systems:
        self.redis.start()
        try:
            self.cluster.start()
        except BaseException:
            self.redis.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.cluster.stop()
        finally:
            self.redis.stop()

    def target(self, system: str) -> tuple[str, dict[str, int]]:
        """The address the generator drives and the server pids to meter, by role
        (``primary``, ``backup``, then ``backup2``... with several)."""
        if system == "redis":
            pids = {"primary": self.redis.primary_pid}
            for index, process in enumerate(self.redis.processes[1:]):
                pids[backup_role(index)] = process.pid
            return self.redis.primary_address, pids
        view = self.cluster.view()
        pids = {}
        if view is not None:
            roles = [("primary", view.primary)]
            roles += [(backup_role(index), name) for index, name in enumerate(view.backups)]
            for role, address in roles:
                node = self.cluster.node_at(address)
                if node is not None:
                    pids[role] = node.pid
        return self.cluster.viewserver, pids


def backup_role(index: int) -> str:
    """The role name of the ``index``-th backup (or replica) in the CPU tables: ``backup``,
    ``backup2``, ``backup3``..."""
    return "backup" if index == 0 else f"backup{index + 1}"


@dataclass(frozen=True, slots=True)
class Settle:
    """Before each run, wait (up to ``wait_s_max``) until the rest of the machine is busy less
    than ``busy_percent_max`` of one core; 0 disables."""

    busy_percent_max: float = 0.0
    wait_s_max: float = 120.0
    pick: str = "median"
    """Of ``repeat`` runs keep the one with the ``median`` or the ``best`` throughput: on a
    machine shared with bursts of other work, the best run is the least disturbed one."""


def measure(systems: Systems, system: str, spec: LoadSpec, repeat: int, settle: Settle) -> Measured:
    """Run ``spec`` against ``system`` ``repeat`` times; keep the median- or best-throughput
    run (``settle.pick``)."""
    runs: list[Measured] = []
    for _ in range(repeat):
        if settle.busy_percent_max > 0:
            busy = wait_until_quiet(settle.busy_percent_max, settle.wait_s_max)
            if busy >= settle.busy_percent_max:
                print(f"  (machine still {busy:.0f}% busy; measuring anyway)", file=sys.stderr)
        address, pids = systems.target(system)
        meter = CpuMeter(pids)
        meter.start()
        factory = backend_factory(system, address, replicas=systems.backups)
        result = run_load(spec, factory, system)
        runs.append(Measured(result, meter.stop()))
    runs.sort(key=lambda run: run.result.ops_per_s)
    return runs[-1] if settle.pick == "best" else runs[len(runs) // 2]


def describe(system: str, measured: Measured) -> str:
    result = measured.result
    cpu = "  ".join(f"{name} {percent:.0f}%" for name, percent in measured.cpu.items())
    return (
        f"{system:>5}  {result.spec.clients:>3} clients  w={result.spec.write_ratio:<4g}"
        f"{result.ops_per_s:>10,.0f} ops/s  p50 {result.latency.p50_ns / 1e6:7.3f} ms"
        f"  p99 {result.latency.p99_ns / 1e6:7.3f} ms  errors {result.errors}  cpu: {cpu}"
    )


def run_matrix(
    systems: Systems,
    clients_list: Sequence[int],
    write_ratios: Sequence[float],
    base: LoadSpec,
    procs_high: Mapping[str, int | None],
    repeat: int,
    settle: Settle,
) -> list[Cell]:
    cells: list[Cell] = []
    for clients in clients_list:
        for write_ratio in write_ratios:
            order = ("redis", "pbkv") if len(cells) % 2 == 0 else ("pbkv", "redis")
            measured: dict[str, Measured] = {}
            for system in order:
                procs = generator_processes(
                    system, clients, write_ratio, systems.read_leases, procs_high
                )
                spec = dataclasses.replace(
                    base, clients=clients, write_ratio=write_ratio, procs=procs
                )
                measured[system] = measure(systems, system, spec, repeat, settle)
                print(describe(system, measured[system]), file=sys.stderr, flush=True)
            comparison = Comparison(
                clients, write_ratio, measured["pbkv"].result, measured["redis"].result
            )
            cells.append(Cell(comparison, measured["pbkv"].cpu, measured["redis"].cpu))
    return cells


CPU_HEADER: Final = (
    "clients",
    "write ratio",
    "pbkv generator",
    "pbkv primary",
    "pbkv backup",
    "Redis generator",
    "Redis primary",
    "Redis replica",
    "others (pbkv/Redis runs)",
)


def render_cpu(cells: Sequence[Cell], markdown: bool) -> str:
    def percent(usage: dict[str, float], name: str) -> str:
        return f"{usage[name]:.0f}%" if name in usage else "-"

    rows = [
        (
            str(cell.comparison.clients),
            f"{cell.comparison.write_ratio:g}",
            percent(cell.pbkv_cpu, GENERATOR),
            percent(cell.pbkv_cpu, "primary"),
            percent(cell.pbkv_cpu, "backup"),
            percent(cell.redis_cpu, GENERATOR),
            percent(cell.redis_cpu, "primary"),
            percent(cell.redis_cpu, "backup"),
            f"{percent(cell.pbkv_cpu, OTHERS)}/{percent(cell.redis_cpu, OTHERS)}",
        )
        for cell in cells
    ]
    return render_table(CPU_HEADER, rows, markdown)


def _first_line(command: list[str]) -> str:
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = output.stdout.strip().splitlines()
    return lines[0] if lines else "unknown"


def machine_description() -> str:
    """One line: cores, CPU model, memory, OS, Python, Redis."""
    model = "unknown CPU"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if found:
            model = found.group(1).strip()
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    redis = _first_line(["redis-server", "--version"]) if shutil.which("redis-server") else "-"
    redis_version = re.search(r"v=(\S+)", redis)
    return (
        f"{os.cpu_count()} cores ({model}), {memory_gib:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, "
        f"Redis {redis_version.group(1) if redis_version else redis}"
    )


def render_record(
    cells: Sequence[Cell],
    command: str,
    spec: LoadSpec,
    procs_high: Mapping[str, int | None],
    selection: str,
    fsync: str | None = None,
    read_leases: bool = False,
    backups: int = 1,
    compiled: bool = False,
) -> str:
    """The Markdown section ``--record`` writes."""
    begin, end = markers(fsync, read_leases, backups, compiled)
    durable = (
        ""
        if fsync is None
        else f" Both durable: pbkv servers `--data-dir --fsync {fsync}`, Redis "
        f"`appendonly yes`, `appendfsync {fsync}` on primary and replica."
    )
    if read_leases:
        durable += " pbkv with read leases (`pbkv viewserver --read-leases`); Redis `GET` reads."
    if backups > 1:
        durable += (
            f" {backups} backups: pbkv `viewserver --backups {backups}` with {backups + 1} "
            f"servers; Redis with {backups} replicas, writes as `SET` + `WAIT {backups} 0`."
        )
    if compiled:
        durable += " pbkv compiled with mypyc (`make compiled`, setup.py)."
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    comparisons = [cell.comparison for cell in cells]
    return "\n".join(
        [
            begin,
            f"Latest run: {today}, on {machine_description()}.{durable}",
            "",
            f"Command: `{command}` ({spec.duration_s:g} s measured per cell after "
            f"{spec.warmup_s:g} s warm-up, {spec.keys:,} keys, {spec.value_size}-byte values, "
            f"{describe_processes(procs_high)}; {selection}).",
            "",
            render_comparison(comparisons, markdown=True),
            "",
            "Targets:",
            "",
            render_verdicts(evaluate_targets(comparisons)).replace("  [", "- ["),
            "",
            "CPU per process (per-cent of one core over the run, warm-up included; *others* is"
            " the rest of the machine: the view service, the kernel, other users):",
            "",
            render_cpu(cells, markdown=True),
            end,
        ]
    )


def record(
    path: Path,
    section: str,
    fsync: str | None = None,
    read_leases: bool = False,
    backups: int = 1,
    compiled: bool = False,
) -> None:
    """Replace the marked section of ``path`` (or append it when there is none)."""
    text = path.read_text() if path.exists() else ""
    begin, end = markers(fsync, read_leases, backups, compiled)
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    path.write_text(text)


def _numbers(text: str, kind: type[int] | type[float]) -> list[Any]:
    return [kind(part) for part in text.split(",") if part.strip()]


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pbkv.bench.suite", description=__doc__)
    duration = float(os.environ.get(DURATION_ENV, DURATION_DEFAULT_S))
    parser.add_argument("--duration", type=float, default=duration, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before each cell")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS_DEFAULT)))
    parser.add_argument("--write-ratios", default=",".join(map(str, WRITE_RATIOS_DEFAULT)))
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-size", type=int, default=64)
    for system, procs in PROCS_HIGH_DEFAULT.items():
        parser.add_argument(
            f"--procs-high-{system}",
            type=int,
            default=procs,
            help=f"generator processes for {system} in cells with more than one client"
            + (" (default: the suite's rule, 2 or 1)" if procs is None else ""),
        )
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell and system")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="before each run, wait until the machine is busy less than PERCENT of one core",
    )
    parser.add_argument("--settle-max", type=float, default=120.0, metavar="SECONDS")
    parser.add_argument(
        "--pick",
        choices=("median", "best"),
        default="median",
        help="which of the --repeat runs a cell keeps (by throughput)",
    )
    parser.add_argument(
        "--fsync",
        choices=("always", "everysec"),
        default=None,
        help="both systems durable: pbkv servers with --data-dir --fsync X, Redis with "
        "appendonly yes, appendfsync X (the table goes to its own marked section)",
    )
    parser.add_argument(
        "--read-leases",
        action="store_true",
        help="pbkv's view service with --read-leases (reads at one round trip; its own section)",
    )
    parser.add_argument(
        "--backups",
        type=int,
        choices=range(1, 5),
        default=1,
        help="pbkv with this many backups (viewserver --backups K, K+1 servers) against Redis "
        "with K replicas and WAIT K 0 (its own section when above 1)",
    )
    parser.add_argument(
        "--busy-poll-us",
        type=int,
        default=0,
        metavar="US",
        help="pbkv servers with --busy-poll-us US (printed only: not with --record)",
    )
    parser.add_argument("--record", type=Path, default=None, help="Markdown file to update")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument(
        "--plots",
        type=Path,
        default=None,
        metavar="DIR",
        help="write bench.svg (throughput) and bench-latency.svg of the most-clients cells here",
    )
    arguments = parser.parse_args(argv)
    if arguments.busy_poll_us and arguments.record is not None:
        parser.error("--busy-poll-us runs are printed, not recorded: drop --record")
    return arguments


def write_suite_plots(directory: Path, comparisons: Sequence[Comparison]) -> list[Path]:
    """Pictures of the cells with the most clients: both systems, every write ratio."""
    from pbkv.bench.plots import write_plots

    if not comparisons:
        return []
    most = max(cell.clients for cell in comparisons)
    results = [r for c in comparisons if c.clients == most for r in (c.pbkv, c.redis)]
    title = f"pbkv and Redis, {most} clients"
    return write_plots(directory / "bench.svg", results, title)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix, print the table; returns the exit code."""
    arguments = parse_arguments(argv)
    # `kill` or a terminal closing must still stop every server started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(128 + signal.SIGHUP))
    base = LoadSpec(
        duration_s=arguments.duration,
        warmup_s=arguments.warmup,
        keys=arguments.keys,
        value_size=arguments.value_size,
    )
    clients_list = _numbers(arguments.clients, int)
    write_ratios = _numbers(arguments.write_ratios, float)
    backups = arguments.backups
    print(
        f"starting Redis (primary + {backups} replica(s)) and pbkv (view service + "
        f"{backups + 1} servers)",
        file=sys.stderr,
    )
    with Systems(
        arguments.fsync, arguments.read_leases, arguments.backups, arguments.busy_poll_us
    ) as systems:
        settle = Settle(arguments.settle, arguments.settle_max, arguments.pick)
        procs_high = {"pbkv": arguments.procs_high_pbkv, "redis": arguments.procs_high_redis}
        cells = run_matrix(
            systems,
            clients_list,
            write_ratios,
            base,
            procs_high,
            arguments.repeat,
            settle,
        )
    comparisons = [cell.comparison for cell in cells]
    print(render_comparison(comparisons))
    print()
    print(render_verdicts(evaluate_targets(comparisons)))
    print()
    print("CPU per process, % of one core:")
    print(render_cpu(cells, markdown=False))
    command = os.environ.get(COMMAND_ENV) or " ".join(["python -m pbkv.bench.suite", *sys.argv[1:]])
    if arguments.record is not None:
        selection = (
            f"{arguments.pick} of {arguments.repeat} runs per cell and system"
            if arguments.repeat > 1
            else "one run per cell and system"
        )
        modes = (arguments.fsync, arguments.read_leases, arguments.backups, build.compiled())
        section = render_record(cells, command, base, procs_high, selection, *modes)
        record(arguments.record, section, *modes)
        print(f"\nrecorded in {arguments.record}", file=sys.stderr)
    if arguments.json is not None:
        document = {
            "comparisons": comparison_json(comparisons),
            "cpu": [{"pbkv": cell.pbkv_cpu, "redis": cell.redis_cpu} for cell in cells],
        }
        arguments.json.write_text(json.dumps(document, indent=2))
    if arguments.plots is not None:
        written = write_suite_plots(arguments.plots, comparisons)
        print(f"plots: {', '.join(map(str, written))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
