"""``pbkv demo``: bring up a cluster, run a live workload, walk through the scenarios, verify,
and always stop everything.

Theory of operation: the cluster is a normal ``pbkv cluster`` cluster in ``--dir`` (its logs
stay there afterwards). A watcher thread narrates each view change as it happens; the workload
runs in its own thread for the whole demo. Each scenario runs from a healthy cluster; one that
fails records a failed check and the demo moves on. The final verification stops the workload,
reads every key once more, dumps the primary and the backup and runs the four checks of
``pbkv.demo.verify``. Whatever happens - a failed check, an exception, Ctrl-C, SIGTERM, SIGHUP -
the ``finally`` stops every process the demo started, by pid, before the report is written.

The cluster is durable (``pbkv cluster up --durable``, ``--fsync always``): the demo shows what
production runs, not the in-memory mode. Every server keeps its state in ``DIR/data/sN``, a
write is acknowledged only once it is on the disk of the primary and of the backup, a restarted
server comes back with its disk (the narration says how many keys it recovered) and, when it
becomes backup again, is caught up with only what it missed. This is what makes the last
scenario, ``power-cut`` (every process killed at once), lose nothing. The in-memory mode's
promises (a restarted server is empty; two members lost at once lose the data, protocol.md N1)
are exercised by the tests, not shown here.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

from pbkv.bench.backends import backend_factory
from pbkv.bench.loadgen import LoadResult, LoadSpec, run_load
from pbkv.check import save_history
from pbkv.cluster import manager
from pbkv.cluster.rpc import dump_all
from pbkv.cluster.state import ClusterState
from pbkv.demo.context import DemoContext, ScenarioFailed, Settings
from pbkv.demo.narration import Narrator
from pbkv.demo.report import HISTORY_FILE_NAME, RunRecord, write_report
from pbkv.demo.scenarios import DEFAULT_ORDER, SCENARIOS
from pbkv.demo.verify import CHECK_BUDGET_S_DEFAULT, verify
from pbkv.demo.watch import ViewWatcher
from pbkv.demo.workload import WORKLOAD_KEYS, Workload
from pbkv.errors import PbkvError

EXIT_PASSED: Final = 0
EXIT_FAILED: Final = 1
EXIT_INTERRUPTED: Final = 130
DEMO_PING_INTERVAL_S: Final = 0.05
DEMO_FSYNC: Final = "always"
"""The demo cluster's fsync policy: acknowledged means on the disk of every member."""
BENCH_CLIENTS: Final = 8
"""Clients of the report's short benchmark (run only with --report, after the checks)."""


class DemoUsageError(PbkvError):
    """A bad demo option (exit 2, usage)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """How ``pbkv demo`` runs (see ``pbkv demo --help``)."""

    scenarios: tuple[str, ...] = DEFAULT_ORDER
    directory: Path = Path(".pbkv/demo")
    report: Path | None = None
    servers: int = 3
    base_port: int = 0
    ping_interval_s: float = DEMO_PING_INTERVAL_S
    dead_pings: int = 5
    pace_s: float = 1.0
    clients: int = 4
    seed: int = 0
    check_budget_s: float = CHECK_BUDGET_S_DEFAULT
    bench_s: float = 2.0
    """Seconds of the report's benchmark (0: none)."""
    etcd: bool = False
    """Replicate the view service on a local 3-member etcd (``pbkv cluster up --etcd``)."""
    backups: int = 1
    """K, the view service's ``--backups``."""
    read_leases: bool = False
    """The primary answers reads alone while it holds a lease (``up --read-leases``)."""


class _Interrupted(BaseException):
    """SIGTERM or SIGHUP: leave like Ctrl-C, through every ``finally``."""


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_demo(options: DemoOptions, stream: TextIO | None = None) -> int:
    """Run the demo; returns the exit code (0 every check passed, 1 some failed, 130
    interrupted). Never leaves a process running."""
    unknown = [s for s in options.scenarios if s not in SCENARIOS]
    if unknown:
        raise DemoUsageError(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    narrator = Narrator(stream)
    settings = Settings(options.ping_interval_s, options.dead_pings, options.pace_s)
    started_wall = time.time()
    state: ClusterState | None = None
    ctx: DemoContext | None = None
    code = EXIT_FAILED
    bench: tuple[LoadResult | None, str] = (None, "")
    with _signals_interrupt():
        try:
            state = _start_cluster(options, narrator, settings)
            ctx = _context(state, narrator, settings, options)
            _run_scenarios(ctx, options.scenarios)
            _verify(ctx, options)
            code = EXIT_PASSED if all(c.ok for c in ctx.checks) else EXIT_FAILED
            if options.report is not None and options.bench_s > 0:
                bench = _bench(ctx, options.bench_s)
        except (KeyboardInterrupt, _Interrupted):
            narrator.say("interrupted: stopping the cluster", scenario="demo")
            code = EXIT_INTERRUPTED
        except PbkvError as error:
            narrator.say(f"cannot continue: {error}", scenario="demo")
            if ctx is not None:
                ctx.check("the demo ran to the end", False, str(error))
        finally:
            _stop(options, narrator, ctx)
    if ctx is not None:
        _summary(ctx, narrator, options, started_wall, code, bench)
    return code


def _bench(ctx: DemoContext, duration_s: float) -> tuple[LoadResult | None, str]:
    """A short benchmark of the demo's cluster for the report (never fails the demo)."""
    ctx.narrator.scenario = "bench"
    spec = LoadSpec(clients=BENCH_CLIENTS, duration_s=duration_s, warmup_s=0.3, keys=1000, seed=1)
    command = (
        f"pbkv bench --cluster-dir DIR --clients {spec.clients} --duration {spec.duration_s:g}"
    )
    ctx.narrator.command(command)
    try:
        factory = backend_factory("pbkv", ctx.state.viewserver, timeout_s=5.0)
        result = run_load(spec, factory, "pbkv")
    except (OSError, RuntimeError, TimeoutError, PbkvError) as error:
        ctx.narrator.say(f"benchmark skipped: {error}", kind="note")
        return None, f"The benchmark could not run: {error}"
    ctx.narrator.say(
        f"{result.ops_per_s:,.0f} ops/s with {spec.clients} clients; latency p50 "
        f"{result.latency.p50_ns / 1e6:.2f} ms, p99 {result.latency.p99_ns / 1e6:.2f} ms"
    )
    return result, ""


def _start_cluster(options: DemoOptions, narrator: Narrator, settings: Settings) -> ClusterState:
    narrator.say(
        "each line: [seconds since the start] scenario: what happened; lines with $ are the "
        "pbkv commands that do the same step by hand (docs/guide.md walks through them)",
        kind="note",
    )
    narrator.say(
        f"starting a view service and {options.servers} servers in {options.directory}; "
        f"servers ping every {settings.ping_interval_s:g} s and one silent for "
        f"{settings.dead_pings} pings ({settings.dead_after_s:.2f} s) is declared dead, so a "
        "failover takes about that long (the default is 0.1 s x 5)"
    )
    narrator.say(
        f"durable: every server keeps its state in {options.directory / 'data'} with --fsync "
        f"{DEMO_FSYNC}, so a write is acknowledged only once it is on the disk of the primary "
        "and of the backup, and a restarted server comes back with its disk"
    )
    narrator.command(
        f"pbkv cluster up --durable --fsync {DEMO_FSYNC} --servers {options.servers} "
        f"--ping-interval {settings.ping_interval_s:g} --dead-pings {settings.dead_pings}"
        + (" --etcd" if options.etcd else "")
        + (" --read-leases" if options.read_leases else "")
        + " --fresh"
    )
    config = manager.ClusterConfig(
        directory=options.directory,
        servers=options.servers,
        base_port=options.base_port,
        ping_interval_s=settings.ping_interval_s,
        dead_pings=settings.dead_pings,
        etcd=options.etcd,
        fsync=DEMO_FSYNC,
        backups=options.backups,
        read_leases=options.read_leases,
        fresh=True,  # a demo always starts a new cluster
    )

    def progress(message: str) -> None:
        narrator.say(message, kind="note")

    return manager.up(config, progress)


def _context(
    state: ClusterState, narrator: Narrator, settings: Settings, options: DemoOptions
) -> DemoContext:
    watcher = ViewWatcher(state.viewserver)
    ctx = DemoContext(state, narrator, watcher, settings)
    watcher.on_view = ctx.on_view
    watcher.on_acknowledged = ctx.on_acknowledged
    watcher.start()
    ctx.wait_serving(with_backup=options.servers >= 2)
    workload = Workload(state.viewserver, clients=options.clients, seed=options.seed)
    ctx.workload = workload
    workload.start()
    narrator.say(
        f"{options.clients} clients start a live workload: appends of unique tokens to "
        f"{', '.join(k for k in WORKLOAD_KEYS if k.startswith('log'))}, puts to "
        f"{', '.join(k for k in WORKLOAD_KEYS if k.startswith('reg'))}, and reads; every call "
        "is recorded for the linearizability check"
    )
    return ctx


def _run_scenarios(ctx: DemoContext, names: tuple[str, ...]) -> None:
    for name in names:
        scenario = SCENARIOS[name]
        ctx.narrator.scenario = name
        ctx.narrator.say(f"--- {scenario.title} ---")
        try:
            ctx.ensure_ready()
            scenario.run(ctx)
        except (ScenarioFailed, PbkvError) as error:
            ctx.check(f"{name} ran to the end", False, str(error))
            if ctx.pending is not None:
                ctx.pending = None


def _verify(ctx: DemoContext, options: DemoOptions) -> None:
    narrator = ctx.narrator
    narrator.scenario = "verify"
    narrator.say("--- final verification ---")
    history = ctx.workload.stop() if ctx.workload is not None else []
    completed = sum(1 for op in history if op.complete is not None)
    narrator.say(
        f"workload stopped: {len(history)} operations, {completed} acknowledged, "
        f"{len(history) - completed} timed out (indeterminate)"
    )
    ctx.ensure_ready()
    # the workload's keys and every key the scenarios that ran touched (no more, no less)
    keys = dict.fromkeys([*WORKLOAD_KEYS, *(op.key for op in ctx.history)])
    final_reads = {key: ctx.client_op("get", key) for key in keys}
    narrator.say(f"read every key once more through the client ({len(final_reads)} keys)")
    view = ctx.view()
    assert view.primary is not None
    narrator.command(f"pbkv dump {view.primary} --json")
    _, primary = dump_all(view.primary)
    backup: dict[str, str] | None = None
    if view.backup is not None:
        narrator.command(f"pbkv dump {view.backup} --json")
        _, backup = dump_all(view.backup)
    narrator.say(
        f"dumped primary {ctx.label(view.primary)} ({len(primary)} keys) and backup "
        f"{ctx.label(view.backup)} ({len(backup) if backup is not None else 0} keys); "
        "checking the history for linearizability"
    )
    all_history = sorted([*history, *ctx.history], key=lambda op: op.invoke)
    history_file = options.directory / HISTORY_FILE_NAME
    save_history(history_file, all_history)
    narrator.say(
        f"history saved to {history_file} (check it again: pbkv check-history {history_file})",
        kind="note",
    )
    for check in verify(primary, backup, all_history, final_reads, options.check_budget_s):
        ctx.check(check.name, check.ok, check.detail)


def _stop(options: DemoOptions, narrator: Narrator, ctx: DemoContext | None) -> None:
    narrator.scenario = "demo"
    if ctx is not None:
        if ctx.workload is not None:
            ctx.workload.stop()
        ctx.watcher.stop()
        with contextlib.suppress(Exception):
            ctx.close_client()
    try:
        stopped = manager.down(options.directory)
    except PbkvError:
        return  # nothing was started (up failed and cleaned up after itself)
    narrator.say(
        f"stopped {len(stopped)} processes (pids {', '.join(str(r.pid) for r in stopped)}); "
        f"nothing left running; logs kept in {options.directory / 'logs'}"
    )


def _summary(
    ctx: DemoContext,
    narrator: Narrator,
    options: DemoOptions,
    started_wall: float,
    code: int,
    bench: tuple[LoadResult | None, str],
) -> None:
    duration = time.time() - started_wall
    if options.report is not None:
        run = RunRecord(
            started_wall=started_wall,
            duration_s=duration,
            started_monotonic=narrator.started,
            state=ctx.state,
            settings=ctx.settings,
            scenarios=options.scenarios,
            lines=list(narrator.lines),
            views=list(ctx.watcher.views),
            faults=list(ctx.faults),
            checks=list(ctx.checks),
            history=[*(ctx.workload.history if ctx.workload else []), *ctx.history],
            bench=bench[0],
            bench_note=bench[1],
        )
        write_report(options.report, run)
    passed = sum(1 for c in ctx.checks if c.ok)
    verdict = "all checks passed" if code == EXIT_PASSED else "SOME CHECKS FAILED"
    failovers = [f.failover_s for f in ctx.faults if f.replaces_primary and f.failover_s]
    timing = (
        f"; primary failovers took {min(failovers):.2f}-{max(failovers):.2f} s" if failovers else ""
    )
    report = f"; report: {options.report}" if options.report is not None else ""
    narrator.say(
        f"{verdict} ({passed}/{len(ctx.checks)}) in {duration:.1f} s{timing}{report}",
        kind="check",
        ok=code == EXIT_PASSED,
    )
    hint = f"the whole timeline: pbkv cluster logs --dir {options.directory}"
    if options.report is None:
        hint += "; a Markdown evidence file: pbkv demo --report demo.md"
    narrator.say(hint, kind="note")
