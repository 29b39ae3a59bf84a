"""The demo's scenarios: each breaks the running cluster in one way and says what it saw.

Every scenario starts from a healthy cluster (``ensure_ready``: dead servers restarted, paused
ones resumed, network healed, an acknowledged view with a backup), narrates each step with the
``pbkv`` command that does the same by hand, and records checks of what the protocol promises
(docs/protocol.md): an acknowledged write survives a failover, a replaced primary serves nothing
(P2/P3), there is never more than one serving primary, and a cluster that loses power all at
once comes back from its disks with every acknowledged write (``power-cut``: D1, V12, P10).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pbkv.cluster import targets
from pbkv.cluster.rpc import dump_all, dump_page
from pbkv.cluster.state import ProcessRecord
from pbkv.core.messages import View
from pbkv.demo.context import DemoContext, ScenarioFailed
from pbkv.demo.disk_scenarios import power_cut, slow_disk
from pbkv.demo.steps import (
    check_single_primary,
    explain_dead_interval,
    read_back,
    report_fault,
    wait_replaced,
    wait_synced,
    write,
)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    run: Callable[[DemoContext], None]


# --- scenarios -------------------------------------------------------------------------------


def basic(ctx: DemoContext) -> None:
    """Part 1 of the lab: put, get, and show that the backup holds the data."""
    view = ctx.view()
    idle = [p for p in ctx.state.servers() if p.address not in view.members()]
    ctx.narrator.say(
        f"view {view.number}: primary={ctx.label(view.primary)} backup={ctx.label(view.backup)}"
        + (f", idle: {', '.join(p.name for p in idle)}" if idle else "")
    )
    write(ctx, "greeting", "hello")
    ctx.narrator.command("pbkv append greeting ', world'")
    ctx.client_op("append", "greeting", ", world")
    read_back(ctx, "greeting", "hello, world", "a read returns what was written")
    assert view.backup is not None
    ctx.narrator.command(f"pbkv dump {view.backup}   # the backup's own copy")
    header, items = dump_all(view.backup)
    ctx.narrator.say(
        f"backup {ctx.label(view.backup)}: role {header.role}, view {header.view.number}, "
        f"{header.total_keys} keys, greeting = {items.get('greeting')!r}"
    )
    ctx.check(
        "the backup holds the data",
        items.get("greeting") == "hello, world",
        f"greeting = {items.get('greeting')!r} on the backup",
    )
    for record in idle:
        idle_header = dump_page(record.address, 0, limit=0)
        ctx.narrator.say(
            f"idle {record.name} holds {idle_header.total_keys} keys: only the primary and the "
            "backup are replicas"
        )


def backup_failure(ctx: DemoContext) -> None:
    """Part 2a: the backup crashes; the primary carries on with a new backup; the old one
    comes back empty and waits as an idle server."""
    view = ctx.view()
    assert view.primary is not None and view.backup is not None
    backup = ctx.record(view.backup)
    fault = ctx.kill(backup, "KILL", "backup")
    ctx.narrator.say(
        f"the view service will declare {backup.name} dead {explain_dead_interval(ctx)}; "
        "the primary stays, an idle server becomes backup"
    )
    ctx.wait_until(
        lambda s: s.view.number > fault.view_before and s.view.backup != backup.address,
        "a view without the dead backup",
    )
    new_view = wait_synced(ctx, fault)
    report_fault(ctx, fault)
    ctx.check(
        "the primary kept serving through the backup's failure",
        new_view.primary == view.primary,
        f"primary {ctx.label(new_view.primary)} in view {new_view.number}",
    )
    ctx.keep_running(f"the workload keeps writing while {backup.name} is down")
    ctx.restart(backup)
    ctx.narrator.say(
        f"{backup.name} rejoins idle; if it becomes backup again it gets only the stream "
        "positions it missed when the primary's backlog still holds them, else a full transfer"
    )


def primary_failure(ctx: DemoContext) -> None:
    """Part 2b: the primary crashes; its backup is promoted; measure the gap."""
    write(ctx, "failover", "written-before-the-crash")
    view = ctx.view()
    assert view.primary is not None
    primary = ctx.record(view.primary)
    fault = ctx.kill(primary, "KILL", "primary")
    ctx.narrator.say(
        f"clients keep retrying; the view service promotes the backup {explain_dead_interval(ctx)}"
    )
    new_view = wait_replaced(ctx, fault, primary.address)
    ctx.check(
        "the backup was promoted",
        new_view.primary == view.backup,
        f"new primary {ctx.label(new_view.primary)}",
    )
    wait_synced(ctx, fault)
    report_fault(ctx, fault)
    ctx.keep_running("the workload keeps writing to the new primary")
    read_back(
        ctx,
        "failover",
        "written-before-the-crash",
        "a write acknowledged before the crash survives",
    )
    ctx.restart(primary)


def sequential_failures(ctx: DemoContext) -> None:
    """Part 2c: two primaries crash one after the other; nothing acknowledged is lost."""
    write(ctx, "sequential", "survives-two-crashes")
    killed = []
    for round_number in (1, 2):
        view = ctx.view()
        assert view.primary is not None
        primary = ctx.record(view.primary)
        fault = ctx.kill(primary, "KILL", "primary")
        killed.append(primary)
        new_view = wait_replaced(ctx, fault, primary.address)
        with_backup = new_view.backup is not None
        wait_synced(ctx, fault, with_backup)
        report_fault(ctx, fault)
        if round_number == 1:
            ctx.narrator.say(
                "the new backup is synced (the view is acknowledged), so it may take over next"
            )
            ctx.keep_running("the workload keeps writing between the two crashes")
    read_back(
        ctx, "sequential", "survives-two-crashes", "a write survives two primary crashes in a row"
    )
    ctx.keep_running("the workload keeps writing to the last primary standing")
    for record in killed:
        ctx.restart(ctx.record(record.address))
    view = wait_synced(ctx, None)
    ctx.narrator.say(
        f"both crashed servers are back; {ctx.label(view.backup)} is the backup again and holds "
        "a full copy"
    )


def partition(ctx: DemoContext) -> None:
    """Cut the primary off from the view service: it is replaced, and can serve nothing."""
    write(ctx, "partition", "before-the-cut")
    view = ctx.view()
    assert view.primary is not None
    old = ctx.record(view.primary)
    viewserver = targets.resolve(ctx.state, "viewserver")  # with etcd: the leader
    fault = ctx.partition(old, viewserver, "primary", "viewserver")
    ctx.narrator.say(
        f"{old.name} keeps running and still reaches its backup and the clients, but its pings "
        "are lost: the view service sees a dead primary"
    )
    new_view = wait_replaced(ctx, fault, old.address)
    wait_synced(ctx, fault)
    report_fault(ctx, fault)
    header, _ = dump_all(old.address)
    ctx.narrator.say(
        f"{old.name} still believes it is {header.role} of view {header.view.number} "
        f"(phase {header.phase}): it has not heard of view {new_view.number}"
    )
    ctx.narrator.say(f"the new view overwrites the key; {old.name} must never show the old value")
    write(ctx, "partition", "after-the-cut")
    answer = ctx.probe_get(old, "partition")
    ctx.narrator.say(f"the old primary answered: {answer}")
    ctx.check(
        "the partitioned old primary refused a read (no stale read)",
        not answer.startswith("ok") and "before-the-cut" not in answer,
        answer,
    )
    check_single_primary(ctx, new_view)
    ctx.keep_running(f"the workload keeps writing to the new primary while {old.name} is cut off")
    ctx.heal()
    learned = ctx.wait_node_view(old.address, new_view.number)
    ctx.narrator.say(
        f"healed: {old.name} heard the view service again, learned view {learned.view.number} "
        f"and is now {learned.role}"
    )


def pause(ctx: DemoContext) -> None:
    """Freeze the primary (SIGSTOP) past the dead interval, then let it continue (SIGCONT)."""
    view = ctx.view()
    assert view.primary is not None
    old = ctx.record(view.primary)
    fault = ctx.kill(old, "STOP", "primary")
    new_view = wait_replaced(ctx, fault, old.address)
    wait_synced(ctx, fault)
    report_fault(ctx, fault)
    ctx.keep_running(f"the workload keeps writing while {old.name} is frozen")
    ctx.resume(old)
    answer = ctx.probe_get(old, "greeting")
    ctx.narrator.say(f"resumed {old.name}; a raw get sent to it at once: {answer}")
    ctx.check(
        "the resumed old primary refused a read (no stale read)",
        not answer.startswith("ok"),
        answer,
    )
    learned = ctx.wait_node_view(old.address, new_view.number)
    ctx.narrator.say(
        f"{old.name} learned view {learned.view.number} and is now {learned.role} (N7: a paused "
        "server is replaced and serves nothing when it resumes)"
    )


def coordinator_failure(ctx: DemoContext) -> None:
    """The view service replicated on etcd (``pbkv demo --etcd``): kill -9 the leader view
    service under load, then the primary right after; a follower takes over within about the
    lease TTL, fails the primary over, and nothing acknowledged is lost."""
    if "," not in ctx.state.viewserver:
        ctx.narrator.say("skipped: this cluster has a single view service (run pbkv demo --etcd)")
        return
    write(ctx, "coordinator", "written-before-the-crashes")
    view = ctx.view()
    assert view.primary is not None
    leader = targets.resolve(ctx.state, "viewserver")
    ctx.narrator.say(
        f"{leader.name} leads the view service: it holds the key in etcd (on a 1 s lease); "
        "the other two answer NotLeader and redirect"
    )
    fault = ctx.kill(leader, "KILL", "viewserver")
    successor = _wait_new_leader(ctx, leader)
    took = time.monotonic() - fault.at
    ctx.narrator.say(
        f"{successor.name} leads {took:.2f} s after the kill: the lease expired in etcd, its "
        "campaign transaction won, it loaded the view from etcd"
    )
    ctx.check("a new view service leader within 2 s", took < 2.0, f"{took:.2f} s")
    primary = ctx.record(view.primary)
    second = ctx.kill(primary, "KILL", "primary")
    new_view = wait_replaced(ctx, second, primary.address)
    ctx.check(
        "the new leader failed the primary over",
        new_view.primary == view.backup,
        f"view {new_view.number}: primary {ctx.label(new_view.primary)}",
    )
    wait_synced(ctx, second)
    report_fault(ctx, second)
    total = (second.view_at or time.monotonic()) - fault.at
    ctx.narrator.say(f"from the leader's kill to the new primary's view: {total:.2f} s")
    read_back(
        ctx,
        "coordinator",
        "written-before-the-crashes",
        "a write acknowledged before both crashes survives",
    )
    ctx.restart(leader)
    ctx.restart(primary)


def _wait_new_leader(ctx: DemoContext, old: ProcessRecord) -> ProcessRecord:
    deadline = time.monotonic() + ctx.settings.wait_s
    while time.monotonic() < deadline:
        try:
            leader = targets.resolve(ctx.state, "viewserver")
        except targets.ClusterError:
            leader = old
        if leader.name != old.name:
            return leader
        time.sleep(0.01)
    raise ScenarioFailed(f"no other view service member led within {ctx.settings.wait_s:g} s")


def replaced_backup(ctx: DemoContext) -> None:
    """V15: the primary stops hearing the view service, its backup freezes and is replaced in a
    view the primary never learns; then the primary's pings are cut too, and it is judged dead.
    The frozen backup, resumed, takes over from its own store once the new view is fenced."""
    write(ctx, "rescue", "written-before-the-faults")
    view = ctx.view()
    assert view.primary is not None and view.backup is not None
    primary, backup = ctx.record(view.primary), ctx.record(view.backup)
    viewserver = targets.resolve(ctx.state, "viewserver")
    ctx.partition(viewserver, primary, "viewserver", "primary", one_way=True)
    ctx.kill(backup, "STOP", "backup")
    replaced = ctx.wait_until(
        lambda s: s.view.backup not in (None, backup.address), "a view that replaced the backup"
    ).view
    ctx.narrator.say(
        f"view {replaced.number} replaced {backup.name} with {ctx.label(replaced.backup)}; "
        f"{primary.name} still pings, but never learns it, so it cannot sync the new backup"
    )
    fault = ctx.partition(primary, viewserver, "primary", "viewserver")
    ctx.resume(backup)
    new_view = wait_replaced(ctx, fault, primary.address)
    wait_synced(ctx, fault)
    report_fault(ctx, fault)
    if len(view.backups) == 1:
        _check_rescue(ctx, backup, replaced, new_view)
    else:  # the other backup of the view was carried complete into the next one (V14)
        ctx.check(
            "a backup of the view before the faults took over", new_view.primary in view.backups
        )
    read_back(ctx, "rescue", "written-before-the-faults", "the write before the faults survived")
    answer = ctx.probe_get(primary, "rescue")
    ctx.check("the cut-off old primary refused a read", not answer.startswith("ok"), answer)
    check_single_primary(ctx, new_view)


def _check_rescue(ctx: DemoContext, backup: ProcessRecord, replaced: View, new_view: View) -> None:
    """The new backup fenced the view that replaced the old one, then the old backup served
    from the store it kept (V15), with log lines to show it."""
    assert replaced.backup is not None  # the view waited for names a new backup
    fenced = ctx.last_event(ctx.record(replaced.backup), replaced.number, ("view_fenced",))
    if fenced is not None:
        ctx.narrator.say(fenced.render(with_date=False), kind="note")
    ctx.check(f"view {replaced.number} was fenced at its backup first (V15)", fenced is not None)
    served = ctx.last_event(backup, new_view.number, ("primary_from_retained_state",))
    if served is not None:
        ctx.narrator.say(served.render(with_date=False), kind="note")
    ctx.check(
        f"{backup.name}, the replaced backup, took over from the store it kept (V15)",
        new_view.primary == backup.address and served is not None,
        f"view {new_view.number}: primary {ctx.label(new_view.primary)}",
    )


def double_failure(ctx: DemoContext) -> None:
    """K = 2 (``--servers 4 --backups 2``): kill -9 the primary and a backup at once; the other
    backup takes over with every acknowledged write (protocol.md P2, V5, V14)."""
    write(ctx, "double", "survives-the-primary-and-a-backup")
    view = ctx.view()
    if view.primary is None or len(view.backups) < 2:
        ctx.check("the view has two backups (--servers 4 --backups 2)", False, view.describe())
        return
    primary, backup = ctx.record(view.primary), ctx.record(view.backups[0])
    survivor = view.backups[1]
    ctx.narrator.say(
        f"{view.describe()}: every write was applied by both backups before its answer"
    )
    fault = ctx.kill(primary, "KILL", "primary")
    ctx.kill(backup, "KILL", "backup")
    status = ctx.wait_until(
        lambda s: s.view.number > fault.view_before and s.view.primary == survivor,
        f"{ctx.label(survivor)} promoted",
    )
    ctx.check(
        "the surviving backup was promoted",
        status.view.primary == survivor,
        f"new primary {ctx.label(status.view.primary)}",
    )
    wait_synced(ctx, fault)
    report_fault(ctx, fault)
    ctx.keep_running("the workload keeps writing to the survivor")
    read_back(
        ctx,
        "double",
        "survives-the-primary-and-a-backup",
        "a write acknowledged before losing two of three members survives",
    )
    for record in (primary, backup):
        ctx.restart(ctx.record(record.address))


SCENARIOS: Final[dict[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario("basic", "put and get; the backup holds the data", basic),
        Scenario("backup-failure", "crash the backup, keep writing, restart it", backup_failure),
        Scenario("primary-failure", "crash the primary, watch the promotion", primary_failure),
        Scenario("sequential-failures", "crash two primaries in a row", sequential_failures),
        Scenario("partition", "cut the primary off from the view service", partition),
        Scenario("pause", "freeze the primary (SIGSTOP), then resume it", pause),
        Scenario(
            "replaced-backup",
            "freeze the backup, cut the primary off: the replaced backup takes over (V15)",
            replaced_backup,
        ),
        Scenario(
            "coordinator-failure",
            "(--etcd) kill -9 the leader view service, then the primary",
            coordinator_failure,
        ),
        Scenario("power-cut", "kill -9 every process at once, restart from disk", power_cut),
        Scenario("slow-disk", "slow the primary's disk past the dead interval (N6)", slow_disk),
        Scenario(
            "double-failure",
            "(--backups 2) kill -9 the primary and a backup at once",
            double_failure,
        ),
    )
}
K2_ONLY: Final = ("double-failure",)
"""Scenarios that need two backups: ``pbkv demo --servers 4 --backups 2`` adds them."""
DEFAULT_ORDER: Final = tuple(
    name for name in SCENARIOS if name != "coordinator-failure" and name not in K2_ONLY
)
"""Without --etcd; ``pbkv demo --etcd`` adds coordinator-failure."""
ETCD_ONLY: Final = ("coordinator-failure",)
