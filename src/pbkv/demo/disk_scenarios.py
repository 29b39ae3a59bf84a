"""The demo's disk scenarios: a power cut (every process killed at once, restarted from its
disk) and a slow disk (a primary whose fsyncs outlast the dead interval is replaced, N6)."""

from __future__ import annotations

import time
from typing import Final

from pbkv.cluster.state import ProcessRecord
from pbkv.core.messages import View
from pbkv.demo.context import DemoContext
from pbkv.demo.steps import (
    check_single_primary,
    describe_transfer,
    explain_dead_interval,
    read_back,
    report_fault,
    wait_replaced,
    wait_synced,
    write,
)
from pbkv.runtime.faults import DELAY_MS_MAX

POWER_CUT_KEY: Final = "power-cut"


def power_cut(ctx: DemoContext) -> None:
    """Issue #10: kill -9 every process at once under load (the view service too), restart
    them all from their disks; every acknowledged write is back (D1, V12)."""
    view = ctx.view()
    assert view.primary is not None and view.backup is not None
    members = [ctx.record(view.primary), ctx.record(view.backup)]
    ctx.narrator.say(
        f"view {view.number}: primary={ctx.label(view.primary)} backup={ctx.label(view.backup)}; "
        f"with --fsync {ctx.state.fsync} a write is acknowledged only once it is on the disk "
        "of both"
    )
    ctx.keep_running("the workload writes to the durable cluster")
    write(ctx, POWER_CUT_KEY, "acknowledged-just-before-the-cut")
    fault = ctx.power_cut()
    before = ctx.workload.snapshot() if ctx.workload is not None else (0, 0)
    ctx.narrator.say(
        "nothing runs now; the clients retry, and a call that finds no answer in time ends "
        "indeterminate (it may or may not have taken effect: the checker allows both)"
    )
    _restart_everything(ctx)
    ctx.wait_until(lambda s: s.view.number > fault.view_before, "a view after the power cut")
    new_view = wait_synced(ctx, fault)
    report_fault(ctx, fault)
    if ctx.workload is not None:
        failed = ctx.workload.snapshot()[1] - before[1]
        ctx.narrator.say(f"{failed} workload operations ended indeterminate across the outage")
    _check_recovered(ctx, members, new_view)
    read_back(
        ctx,
        POWER_CUT_KEY,
        "acknowledged-just-before-the-cut",
        "a write acknowledged just before the power cut survives",
    )
    ctx.keep_running("the workload keeps writing to the recovered cluster")


SLOW_DISK_KEY: Final = "slow-disk"


def slow_disk(ctx: DemoContext) -> None:
    """N6: the primary's fsyncs become slower than the dead interval. With --fsync always its
    writes wait for them and its pings wait behind the writes, so the view service replaces it;
    nothing acknowledged is lost, and its own log says why (``disk_sync_slow``)."""
    view = ctx.view()
    assert view.primary is not None
    old = ctx.record(view.primary)
    delay_ms = min(DELAY_MS_MAX, max(200.0, 2000 * ctx.settings.dead_after_s))
    fault = ctx.slow_disk(old, "primary", delay_ms)
    ctx.narrator.say(
        f"{old.name} runs on, but each write it makes durable now waits {delay_ms:g} ms for its "
        f"disk and its pings wait behind: the service judges a server dead "
        f"{explain_dead_interval(ctx)}"
    )
    write(ctx, SLOW_DISK_KEY, "written-while-the-disk-is-slow")
    new_view = wait_replaced(ctx, fault, old.address)
    spares = [s for s in ctx.state.servers() if s.address not in view.members()]
    if not spares:
        _flapping(ctx, old, new_view)
    wait_synced(ctx, fault)
    report_fault(ctx, fault)
    slow = ctx.wait_event(old, "disk_sync_slow", fault.wall)
    ctx.check(
        f"the slowed primary {old.name} says why in its own log (disk_sync_slow, N6)",
        slow is not None,
        slow.render(with_date=False) if slow is not None else "no disk_sync_slow line",
    )
    read_back(
        ctx,
        SLOW_DISK_KEY,
        "written-while-the-disk-is-slow",
        "a write answered while the primary's disk was slow is served by the new primary",
    )
    check_single_primary(ctx, ctx.view())
    if spares:
        ctx.heal()
    learned = ctx.wait_node_view(old.address, new_view.number)
    ctx.narrator.say(
        f"healed: {old.name}'s disk is normal again; it learned view {learned.view.number} and "
        f"is {learned.role} (pbkv_disk_sync_seconds on its metrics port times every fsync)"
    )


def _flapping(ctx: DemoContext, old: ProcessRecord, replaced: View) -> None:
    """No spare server: the service takes the slowed server back as backup, whose transfer
    and forwards wait for its disk and its pings behind them, and replaces it again (N6)."""
    ctx.narrator.say(
        f"no spare server: the service takes {old.name} back as backup; installing the state "
        "and every forward wait for its slow disk, its pings wait behind them, and it is "
        "replaced again, for as long as the disk is slow (N6)"
    )
    watch_s = max(1.0, 8 * ctx.settings.dead_after_s)
    time.sleep(watch_s)
    views = ctx.view().number - replaced.number
    ctx.check(
        f"without a spare, {old.name} is taken back and replaced again while its disk is slow",
        views >= 2,
        f"{views} more views in {watch_s:g} s",
    )
    ctx.heal()


def _restart_everything(ctx: DemoContext) -> None:
    ctx.narrator.say(
        "power back: the view service first (it reloads its view from its data directory), "
        "then every server from its own"
    )
    ctx.restart(ctx.record(ctx.state.viewserver))
    for record in list(ctx.state.servers()):
        ctx.restart(record)


def _check_recovered(ctx: DemoContext, members: list[ProcessRecord], view: View) -> None:
    """The evidence: what each replica recovered from disk, who serves, how the backup caught
    up."""
    names = " ".join(m.name for m in members)
    ctx.narrator.command(f"pbkv cluster logs {names} --event storage_recovered")
    seen = []
    for record in members:
        event = ctx.newest_event(ctx.record(record.address), "storage_recovered")
        if event is not None:
            ctx.narrator.say(event.render(with_date=False), kind="note")
            seen.append((record.name, event.fields.get("keys"), event.fields.get("position")))
    ctx.check(
        "both replicas of the view before the cut recovered their state from disk",
        len(seen) == len(members) and all(str(keys) not in ("0", "None") for _, keys, _ in seen),
        "; ".join(f"{name} keys={keys} position={pos}" for name, keys, pos in seen)
        or "no storage_recovered line",
    )
    ctx.check(
        "the recovered view is served by a replica of the view before the cut (V12)",
        view.primary in {m.address for m in members},
        f"view {view.number}: primary {ctx.label(view.primary)}",
    )
    assert view.primary is not None and view.backup is not None
    transfer = ctx.last_transfer(ctx.record(view.primary), view.number)
    ctx.check(
        "the backup was brought up to date before the view was acknowledged",
        transfer is not None,
        describe_transfer(ctx, transfer, view) if transfer else "no transfer line",
    )
