"""Steps the demo's scenarios share: wait for a replacement or a synced view, narrate a
transfer or a fault's timings, write and read back through the demo's client, check that one
server serves as primary."""

from __future__ import annotations

from pbkv.cluster.logs import LogEvent
from pbkv.cluster.rpc import NoAnswer, dump_page
from pbkv.core.messages import View
from pbkv.demo.context import DemoContext, Fault


def wait_replaced(ctx: DemoContext, fault: Fault, primary: str) -> View:
    """Until a view whose primary is no longer ``primary``."""
    status = ctx.wait_until(
        lambda s: s.view.number > fault.view_before and s.view.primary != primary,
        f"a new primary instead of {ctx.label(primary)}",
    )
    return status.view


def wait_synced(ctx: DemoContext, fault: Fault | None, with_backup: bool = True) -> View:
    """Until the primary acknowledged the view (its backup holds the complete state); narrate
    the state transfer it took."""
    status = ctx.wait_serving(with_backup)
    view = status.view
    if fault is not None and fault.acknowledged_at is None:
        record = ctx.watcher.record_of(view.number)
        if record is not None and record.acknowledged_at is not None:
            fault.acknowledged_at = record.acknowledged_at
    if view.backup is None:
        ctx.narrator.say(f"view {view.number} has no backup: the primary serves alone")
        return view
    assert view.primary is not None
    transfer = ctx.last_transfer(ctx.record(view.primary), view.number)
    if transfer is not None:
        ctx.narrator.say(
            f"{describe_transfer(ctx, transfer, view)}; "
            "the primary acknowledged the view and serves again"
        )
    else:
        ctx.narrator.say(f"view {view.number} acknowledged: the backup holds the complete state")
    return view


def describe_transfer(ctx: DemoContext, transfer: LogEvent, view: View) -> str:
    """One line for the ``catch_up_done`` or ``state_transfer_done`` event of ``view`` (P10)."""
    assert view.primary is not None and view.backup is not None
    fields = transfer.fields
    backup = ctx.label(view.backup)
    moved = f"{fields.get('bytes')} bytes in {fields.get('chunks')} chunk(s)"
    if transfer.event == "catch_up_done":
        return (
            f"catch-up of the returning backup {backup}: only the {fields.get('positions')} "
            f"stream positions it missed, {moved} (no full transfer)"
        )
    start = ctx.transfer_start(ctx.record(view.primary), view.number)
    held = start.fields.get("backup_position", "0") if start is not None else "0"
    if start is None or str(held) == "0":
        return f"state transfer to the new backup {backup}: {fields.get('keys')} keys, {moved}"
    return (
        f"full state transfer to the returning backup {backup}, which held stream position "
        f"{held}: {fields.get('keys')} keys, {moved} ({start.fields.get('reason')})"
    )


def report_fault(ctx: DemoContext, fault: Fault) -> None:
    ctx.end_fault(fault)
    parts = []
    if fault.failover_s is not None:
        parts.append(f"new view {fault.failover_s:.2f} s after the fault")
    if fault.serving_s is not None:
        parts.append(f"serving again after {fault.serving_s:.2f} s")
    if fault.stall_s is not None:
        parts.append(f"clients waited at most {fault.stall_s:.2f} s for an operation")
    if ctx.workload is not None:
        completed, failed = ctx.workload.snapshot()
        parts.append(f"{completed} operations completed so far, {failed} timed out")
    ctx.narrator.say("; ".join(parts))


def explain_dead_interval(ctx: DemoContext) -> str:
    settings = ctx.settings
    return (
        f"after {settings.dead_pings} missed pings ({settings.dead_after_s:.2f} s at one ping "
        f"every {settings.ping_interval_s:g} s)"
    )


def write(ctx: DemoContext, key: str, value: str) -> None:
    ctx.narrator.command(f"pbkv put {key} {value!r}")
    ctx.client_op("put", key, value)


def read_back(ctx: DemoContext, key: str, expected: str, claim: str) -> None:
    ctx.narrator.command(f"pbkv get {key}")
    value = ctx.client_op("get", key)
    ctx.check(claim, value == expected, f"{key} = {value!r}")


def check_single_primary(ctx: DemoContext, view: View) -> None:
    serving = []
    for record in ctx.state.servers():
        try:
            header = dump_page(record.address, 0, limit=0, timeout_s=0.5)
        except NoAnswer:
            continue
        if header.role == "primary" and header.phase == "serving":
            serving.append(record.address)
    ctx.check(
        "no split brain: exactly one server serves as primary",
        serving == [view.primary],
        f"serving: {', '.join(ctx.label(a) for a in serving) or 'none'}",
    )
