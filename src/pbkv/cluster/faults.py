"""Network faults through each process's loopback admin port (``pbkv.runtime.admin``).

Theory of operation: a partition is enforced by the processes themselves, at their send and
receive boundary, so cutting A from B means telling *both* ends: A drops what goes to and comes
from B, and B the mirror. A one-way cut A->B tells A to drop what it sends to B and B to drop
what it receives from A; B's messages still reach A. Client traffic carries no node name and is
never cut: an isolated primary still hears clients, which is exactly what shows that it refuses
them. Faults accumulate until ``heal``. A slow disk is set on the server alone: it lengthens
each fsync of its data directory (``slow-disk``). Admin ports listen on 127.0.0.1 only, so
only the local operator can send these.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from pbkv.cluster import processes
from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.cluster.targets import ClusterError, record_event, resolve
from pbkv.runtime.admin import (
    AdminRequest,
    AdminRequestFailed,
    AdminStatus,
    AdminStatusReply,
    Heal,
    Partition,
    SlowDisk,
    Unreliable,
    send_admin,
)
from pbkv.runtime.faults import DELAY_MS_MAX

ADMIN_TIMEOUT_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Order:
    """One admin message for one process (what a fault command does, step by step)."""

    record: ProcessRecord
    message: AdminRequest

    def describe(self) -> str:
        message = self.message
        match message:
            case Partition(peers=peers, direction=direction):
                return f"{self.record.name}: drop {direction} with {', '.join(peers)}"
            case Heal():
                return f"{self.record.name}: heal"
            case Unreliable(drop=drop, delay_ms=delay_ms):
                return f"{self.record.name}: drop {drop:g}, delay up to {delay_ms:g} ms"
            case SlowDisk(delay_ms=delay_ms) if delay_ms:
                return f"{self.record.name}: every fsync {delay_ms:g} ms slower"
            case SlowDisk():
                return f"{self.record.name}: disk back to normal"
            case _:
                return f"{self.record.name}: {type(message).__name__}"


def send(orders: Iterable[Order], timeout_s: float = ADMIN_TIMEOUT_S) -> list[str]:
    """Deliver every order; returns what was done, one line each.

    Raises:
        ClusterError: some process refused its order (exit 4), or ``NoAnswerFromProcess``:
            every one that failed did not answer (paused, dead, busy; exit 3); the others were
            still delivered, and the message names which failed.
    """
    done: list[str] = []
    failed: list[str] = []
    refused = False
    for order in orders:
        try:
            send_admin(order.record.admin_address, order.message, timeout_s)
        except AdminRequestFailed as error:
            refused = True
            failed.append(f"{order.record.name} refused: {error}")
        except OSError as error:
            state = processes.process_state(order.record.pid)
            why = state if state != "alive" else (str(error) or type(error).__name__)
            failed.append(f"{order.record.name} did not answer ({why})")
        else:
            done.append(order.describe())
    if failed:
        text = "; ".join(failed) + (f" (done: {'; '.join(done)})" if done else "")
        raise ClusterError(text) if refused else NoAnswerFromProcess(text)
    return done


class NoAnswerFromProcess(ClusterError):
    """Every order that failed found its process silent (paused, busy in a long fsync, or
    dead): unavailable (exit 3), not refused; the command may be repeated."""

    exit_code = 3


def partition_orders(a: ProcessRecord, b: ProcessRecord, one_way: bool = False) -> list[Order]:
    """Cut A<->B (or only A->B)."""
    if a.name == b.name:
        raise ClusterError(f"cannot partition {a.name} from itself")
    if one_way:
        return [Order(a, Partition((b.address,), "out")), Order(b, Partition((a.address,), "in"))]
    return [Order(a, Partition((b.address,), "both")), Order(b, Partition((a.address,), "both"))]


def isolate_orders(state: ClusterState, a: ProcessRecord) -> list[Order]:
    """Cut A from every other process of the cluster, both ways."""
    others = [p for p in state.processes if p.name != a.name]
    if not others:
        raise ClusterError(f"{a.name} is the only process: nothing to isolate it from")
    orders = [Order(a, Partition(tuple(p.address for p in others), "both"))]
    return orders + [Order(p, Partition((a.address,), "both")) for p in others if _reachable(p)]


def heal_orders(state: ClusterState, targets: Iterable[ProcessRecord] | None = None) -> list[Order]:
    """Heal every running process (or only ``targets``)."""
    chosen = list(targets) if targets is not None else list(state.processes)
    return [Order(p, Heal()) for p in chosen if _reachable(p)]


def unreliable_orders(
    state: ClusterState, target: str, drop: float, delay_ms: float, seed: int | None = None
) -> list[Order]:
    """Make ``target`` (or ``all``: every running process) drop and delay what it sends."""
    if not 0.0 <= drop <= 1.0:
        raise ClusterError("--drop must be between 0 and 1")
    if delay_ms < 0:
        raise ClusterError("--delay-ms must not be negative")
    if target == "all":  # a dead process sends nothing (heal and slow-disk skip it too)
        records = [p for p in state.processes if _reachable(p)]
    else:
        records = [resolve(state, target)]
    return [Order(p, Unreliable(drop, delay_ms, seed)) for p in records]


def slow_disk_orders(state: ClusterState, target: str, delay_ms: float) -> list[Order]:
    """Make every fsync of ``target``'s data directory (or of every server's: ``all``)
    ``delay_ms`` slower; 0 restores it."""
    if not 0.0 <= delay_ms <= DELAY_MS_MAX:
        raise ClusterError(f"--ms must be between 0 and {DELAY_MS_MAX:g}")
    if target == "all":
        records = [p for p in state.processes if p.kind == "server" and _reachable(p)]
    else:
        records = [resolve(state, target)]
    if not records or any(p.kind != "server" for p in records):
        raise ClusterError(f"{target}: only a server has a data directory to slow down")
    return [Order(p, SlowDisk(delay_ms)) for p in records]


def _reachable(record: ProcessRecord) -> bool:
    """Dead processes have no faults to set; paused ones are tried (and reported)."""
    return processes.process_state(record.pid, record.argv) != "dead"


def partition(state: ClusterState, a: str, b: str, one_way: bool = False) -> list[str]:
    """``pbkv cluster partition A B [--one-way]``."""
    first, second = resolve(state, a), resolve(state, b)
    orders = partition_orders(first, second, one_way)
    record_event(state, "cluster_partition", a=first.name, b=second.name, one_way=one_way)
    return send(orders)


def isolate(state: ClusterState, a: str) -> list[str]:
    """``pbkv cluster isolate A``."""
    target = resolve(state, a)
    orders = isolate_orders(state, target)
    record_event(state, "cluster_isolate", target=target.name, address=target.address)
    return send(orders)


def heal(state: ClusterState) -> list[str]:
    """``pbkv cluster heal``: every running process forgets every fault."""
    record_event(state, "cluster_heal")
    return send(heal_orders(state))


def unreliable(
    state: ClusterState, target: str, drop: float, delay_ms: float, seed: int | None = None
) -> list[str]:
    """``pbkv cluster unreliable TARGET --drop P --delay-ms D``."""
    orders = unreliable_orders(state, target, drop, delay_ms, seed)
    record_event(state, "cluster_unreliable", target=target, drop=drop, delay_ms=delay_ms)
    return send(orders)


def slow_disk(state: ClusterState, target: str, delay_ms: float) -> list[str]:
    """``pbkv cluster slow-disk TARGET --ms D``."""
    orders = slow_disk_orders(state, target, delay_ms)
    record_event(state, "cluster_slow_disk", target=target, delay_ms=delay_ms)
    return send(orders)


def admin_status(record: ProcessRecord, timeout_s: float = ADMIN_TIMEOUT_S) -> AdminStatusReply:
    """The process's own view of itself (role, view, keys, counters, faults in force).

    Raises:
        ClusterError: it did not answer.
    """
    try:
        reply = send_admin(record.admin_address, AdminStatus(), timeout_s)
    except (OSError, AdminRequestFailed) as error:
        raise ClusterError(f"{record.name} did not answer its admin port: {error}") from None
    if not isinstance(reply, AdminStatusReply):
        raise ClusterError(f"{record.name} answered {type(reply).__name__}, not a status")
    return reply
