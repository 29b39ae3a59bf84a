"""What every demo scenario works with: the cluster, the narration, the view watcher, the
workload, and the record of faults, failovers and checks that the report is made of.

Scenario code calls the helpers here (``kill``, ``restart``, ``partition`` ...) rather than the
manager directly: each helper narrates the equivalent ``pbkv cluster`` command, so a student can
replay the demo by hand, and records the fault with its time so the report can show the log
lines around it and the failover it caused.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pbkv.check.history import Operation, OpKind
from pbkv.client import Client
from pbkv.cluster import faults, manager, processes, targets
from pbkv.cluster.logs import LogEvent
from pbkv.cluster.rpc import NoAnswer, dump_all, probe_get
from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.core.messages import DumpReply, View, ViewServiceStatus
from pbkv.demo.log_index import LogIndex
from pbkv.demo.narration import Narrator
from pbkv.demo.verify import Check
from pbkv.demo.watch import ViewRecord, ViewWatcher
from pbkv.demo.workload import Workload
from pbkv.errors import Unavailable

PROBE_TIMEOUT_S: Final = 1.0
TRANSFER_EVENTS: Final = ("catch_up_done", "state_transfer_done")
RECOVERY_POLL_S: Final = 0.02
LOG_CLOCK_SLACK_S: Final = 0.01
"""Log stamps are milliseconds: a line written right after ``since`` may read slightly before."""


class ScenarioFailed(Exception):
    """A scenario could not continue (the cluster did not do what it should, in time)."""


@dataclass(slots=True)
class Fault:
    """One fault the demo injected, and what followed.

    Attributes:
        scenario: the scenario that injected it.
        label: what was done (``kill -9 primary s1``).
        at: ``time.monotonic()`` when it was done; ``wall``: ``time.time()``.
        view_before: the view number when it was done.
        replaces_primary: True if the fault is expected to cause a failover.
        view_at / new_view: when the next view appeared and its number.
        acknowledged_at: when that view (or a later one) was acknowledged: serving again.
        stall_s: the longest stretch with no client operation completing after the fault.
    """

    scenario: str
    label: str
    at: float
    wall: float
    view_before: int
    replaces_primary: bool
    view_at: float | None = None
    new_view: int | None = None
    acknowledged_at: float | None = None
    stall_s: float | None = None

    @property
    def failover_s(self) -> float | None:
        return None if self.view_at is None else self.view_at - self.at

    @property
    def serving_s(self) -> float | None:
        return None if self.acknowledged_at is None else self.acknowledged_at - self.at


@dataclass(frozen=True, slots=True)
class Settings:
    """Timing of the demo: the cluster's, and ``pace_s``, how long the workload runs on its
    own between steps (so a person can follow and the history covers each fault)."""

    ping_interval_s: float
    dead_pings: int
    pace_s: float = 1.0

    @property
    def dead_after_s(self) -> float:
        return self.ping_interval_s * self.dead_pings

    @property
    def wait_s(self) -> float:
        """How long any step may wait for the cluster before the scenario fails."""
        return max(5.0, 30 * self.dead_after_s)


@dataclass(slots=True)
class DemoContext:
    """Shared by all scenarios of one demo run."""

    state: ClusterState
    narrator: Narrator
    watcher: ViewWatcher
    settings: Settings
    workload: Workload | None = None
    faults: list[Fault] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    pending: Fault | None = None
    history: list[Operation] = field(default_factory=list)
    kv: Client | None = None
    faulted: bool = False
    """A partition or a slow disk is in force: the next scenario starts with ``heal``."""
    logs: LogIndex = field(default_factory=LogIndex)
    """The processes' logs, read as they grow (each question reads only what is new)."""

    # --- names -----------------------------------------------------------------------------

    def label(self, address: str | None) -> str:
        """``127.0.0.1:7102 (s2)`` for an address of this cluster."""
        if address is None:
            return "-"
        record = self.state.find(address)
        return f"{address} ({record.name})" if record else address

    def record(self, address: str) -> ProcessRecord:
        found = self.state.find(address)
        if found is None:
            raise ScenarioFailed(f"{address} is not a process of the demo cluster")
        return found

    def status(self) -> ViewServiceStatus:
        return self.wait_until(lambda s: s.view.number > 0, "a view")

    def view(self) -> View:
        return self.status().view

    # --- narration of views (called from the watcher thread) ---------------------------------

    def on_view(self, record: ViewRecord) -> None:
        view = record.view
        text = (
            f"view {view.number}: primary={self.label(view.primary)} "
            f"backup={self.label(view.backup)}"
        )
        fault = self.pending
        if fault is not None and fault.view_at is None:
            fault.view_at = record.seen_at
            fault.new_view = view.number
            text += f" ({record.seen_at - fault.at:.2f} s after {fault.label})"
        self.narrator.say(text, kind="view")

    def on_acknowledged(self, record: ViewRecord) -> None:
        fault = self.pending
        if (
            fault is not None
            and fault.new_view is not None
            and fault.acknowledged_at is None
            and record.acknowledged_at is not None
        ):
            fault.acknowledged_at = record.acknowledged_at

    # --- waiting -----------------------------------------------------------------------------

    def wait_until(
        self, ready: Callable[[ViewServiceStatus], bool], what: str
    ) -> ViewServiceStatus:
        try:
            return self.watcher.wait_until(ready, self.settings.wait_s, what)
        except Exception as error:
            raise ScenarioFailed(str(error)) from None

    def wait_serving(self, with_backup: bool = True) -> ViewServiceStatus:
        """A view whose primary acknowledged it (its backup, if any, holds the state)."""
        what = "an acknowledged view with a backup" if with_backup else "an acknowledged view"
        return self.wait_until(
            lambda s: (
                s.acknowledged
                and s.view.primary is not None
                and (s.view.backup is not None or not with_backup)
            ),
            what,
        )

    def wait_node_view(self, address: str, number: int) -> DumpReply:
        """Until ``address`` itself holds view ``number`` or later; returns its dump header."""
        deadline = time.monotonic() + self.settings.wait_s
        while True:
            try:
                header, _ = dump_all(address, timeout_s=0.5)
                if header.view.number >= number:
                    return header
            except NoAnswer:
                pass
            if time.monotonic() > deadline:
                raise ScenarioFailed(f"{self.label(address)} did not learn view {number} in time")
            time.sleep(0.02)

    # --- faults --------------------------------------------------------------------------------

    def begin_fault(self, label: str, replaces_primary: bool, track: bool = True) -> Fault:
        status = self.watcher.current()
        fault = Fault(
            scenario=self.narrator.scenario,
            label=label,
            at=time.monotonic(),
            wall=time.time(),
            view_before=status.view.number if status else 0,
            replaces_primary=replaces_primary,
        )
        self.faults.append(fault)
        if track:
            self.pending = fault
        return fault

    def end_fault(self, fault: Fault, settle_s: float = 0.5) -> None:
        """Measure the client-visible stall after ``fault`` (the workload keeps running)."""
        workload = self.workload
        if workload is not None:
            from pbkv.demo.workload import longest_stall

            end = (fault.acknowledged_at or fault.view_at or time.monotonic()) + settle_s
            time.sleep(max(0.0, end - time.monotonic()))
            fault.stall_s = longest_stall(
                workload.completions_between(fault.at, end), fault.at, end
            )
        if self.pending is fault:
            self.pending = None

    def kill(self, record: ProcessRecord, signal_name: str, role: str) -> Fault:
        flag = "" if signal_name == "KILL" else f" --signal {signal_name}"
        self.narrator.command(f"pbkv cluster kill {role}{flag}   # {record.name}, pid {record.pid}")
        verb = {"KILL": "kill -9", "TERM": "kill -TERM", "STOP": "kill -STOP (pause)"}[signal_name]
        fault = self.begin_fault(f"{verb} {role} {record.name}", role == "primary")
        self.narrator.say(f"{verb} {role} {record.address} (pid {record.pid})")
        manager.kill(self.state, record, signal_name)
        return fault

    def resume(self, record: ProcessRecord) -> None:
        self.narrator.command(f"pbkv cluster resume {record.name}")
        self.mark(f"resume {record.name}")
        manager.resume(record, self.state)

    def restart(self, record: ProcessRecord) -> ProcessRecord:
        self.narrator.command(f"pbkv cluster restart {record.name}")
        self.mark(f"restart {record.name}")
        since = time.time()
        self.state, started = manager.restart(self.state, record)
        self.narrator.say(
            f"restarted {record.name} (pid {started.pid}): {self._recovered(started, since)}"
        )
        return started

    def _recovered(self, record: ProcessRecord, since: float) -> str:
        """What a restarted process came back with, from its own log."""
        if record.kind != "server":
            return "it reloaded its view from its data directory"
        if self.state.fsync is None:
            return "empty memory, a new incarnation"
        recovered = self.wait_event(record, "storage_recovered", since)
        if recovered is None:
            return "empty memory, its disk kept (no storage_recovered line in its log yet)"
        fields = recovered.fields
        return (
            f"empty memory, its disk kept: it recovers {fields.get('keys')} keys "
            f"(stream position {fields.get('position')}, durable view "
            f"{fields.get('durable_view')})"
        )

    def newest_event(self, record: ProcessRecord, name: str, since: float = 0.0) -> LogEvent | None:
        """The process's newest ``name`` line, if written at ``since`` (wall clock) or later
        (``storage_recovered``: what a server's disk held at start-up)."""
        event = self.logs.newest(record.name, Path(record.log_file), name)
        return event if event is not None and event.ts >= since - LOG_CLOCK_SLACK_S else None

    def wait_event(self, record: ProcessRecord, name: str, since: float) -> LogEvent | None:
        """``newest_event``, waiting for it while the process runs (a restored view service
        may count a restarted server as started before its new incarnation opened its disk)."""
        deadline = time.monotonic() + self.settings.wait_s
        while (event := self.newest_event(record, name, since)) is None:
            if time.monotonic() > deadline or processes.process_state(record.pid) == "dead":
                return None
            time.sleep(RECOVERY_POLL_S)
        return event

    def power_cut(self) -> Fault:
        """kill -9 of every process (view service included) in the same instant."""
        records = [self.record(self.state.viewserver), *self.state.servers()]
        names = " ".join(r.name for r in records)
        self.narrator.command(f"for p in {names}; do pbkv cluster kill $p & done; wait")
        fault = self.begin_fault("power cut: kill -9 of every process", False)
        for record in records:
            targets.record_event(
                self.state,
                "cluster_kill",
                target=record.name,
                address=record.address,
                pid=record.pid,
                signal="KILL",
            )
        for record in records:
            processes.send_signal(record.pid, signal.SIGKILL)
        for record in records:
            if not processes.wait_dead(record.pid, PROBE_TIMEOUT_S * 5):
                raise ScenarioFailed(f"{record.name} (pid {record.pid}) did not die")
        self.narrator.say(
            f"kill -9 of {len(records)} processes at once: "
            + ", ".join(f"{r.name} (pid {r.pid})" for r in records)
        )
        return fault

    def partition(
        self, a: ProcessRecord, b: ProcessRecord, label_a: str, label_b: str, one_way: bool = False
    ) -> Fault:
        """Cut ``a`` from ``b`` both ways (``one_way``: only what ``a`` sends to ``b``); a cut
        both ways is expected to replace the primary, a one-way cut is only marked."""
        flag, arrow = (" --one-way", "->") if one_way else ("", "<->")
        self.narrator.command(
            f"pbkv cluster partition {label_a} {label_b}{flag}   # {a.name} {arrow} {b.name}"
        )
        label = f"partition {label_a} {a.name} from {label_b}{flag}"
        fault = self.begin_fault(label, not one_way, track=not one_way)
        self.faulted = True
        faults.partition(self.state, a.name, b.name, one_way)
        ways = f"what {a.name} sends to {b.name} is lost" if one_way else "both ways"
        self.narrator.say(f"cut {a.name} {a.address} off from {b.name} {b.address}, {ways}")
        return fault

    def slow_disk(self, record: ProcessRecord, role: str, delay_ms: float) -> Fault:
        """Every fsync of ``record``'s data directory ``delay_ms`` slower (N6): expected to
        replace a primary, whose pings wait behind its fsyncs."""
        self.narrator.command(f"pbkv cluster slow-disk {role} --ms {delay_ms:g}   # {record.name}")
        label = f"slow disk: every fsync of {role} {record.name} {delay_ms:g} ms slower"
        fault = self.begin_fault(label, role == "primary")
        self.faulted = True
        faults.slow_disk(self.state, record.name, delay_ms)
        return fault

    def heal(self) -> None:
        self.narrator.command("pbkv cluster heal")
        self.mark("heal")
        faults.heal(self.state)
        self.faulted = False

    def mark(self, label: str) -> None:
        """A notable moment (no failover expected) for the report's log excerpts."""
        self.begin_fault(label, False, track=False)

    def keep_running(self, why: str) -> None:
        """Let the workload run for ``pace_s`` and say how much it did meanwhile."""
        if self.settings.pace_s <= 0:
            return
        before = self.workload.snapshot() if self.workload is not None else (0, 0)
        time.sleep(self.settings.pace_s)
        if self.workload is None:
            return
        completed, failed = self.workload.snapshot()
        self.narrator.say(
            f"{why}: {completed - before[0]} operations completed in {self.settings.pace_s:g} s"
            + (f", {failed - before[1]} timed out" if failed > before[1] else "")
        )

    # --- the demo's own client ------------------------------------------------------------

    def client_op(self, op: OpKind, key: str, value: str | None = None) -> str | None:
        """One operation by the demo's own client (``demo`` in the history)."""
        if self.kv is None:
            self.kv = Client(self.state.viewserver, timeout=self.settings.wait_s)
        kv = self.kv
        invoke = time.monotonic()
        result: str | None = None
        try:
            if op == "get":
                result = kv.get(key)
            elif op == "put":
                kv.put(key, value or "")
            elif op == "append":
                kv.append(key, value or "")
            else:
                kv.delete(key)
        except Unavailable as error:
            self.history.append(Operation("demo", op, key, value, invoke, None, None))
            raise ScenarioFailed(f"{op} {key}: {error}") from None
        self.history.append(Operation("demo", op, key, value, invoke, time.monotonic(), result))
        return result

    def close_client(self) -> None:
        if self.kv is not None:
            self.kv.close()
            self.kv = None

    # --- observations ------------------------------------------------------------------------

    def probe_get(self, record: ProcessRecord, key: str) -> str:
        """A raw get straight to ``record`` (see ``pbkv.cluster.rpc.probe_get``), narrated."""
        self.narrator.command(f"pbkv cluster probe {record.name} {key}   # raw get, no retries")
        return probe_get(record.address, key, PROBE_TIMEOUT_S)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, ok, detail))
        self.narrator.check(name, ok, detail)
        return ok

    def last_transfer(self, primary: ProcessRecord, view_number: int) -> LogEvent | None:
        """How the backup of ``view_number`` got the state: the primary's ``catch_up_done``
        (only the positions it missed, P10) or ``state_transfer_done`` (the whole store) line
        for that view, if any."""
        return self.last_event(primary, view_number, TRANSFER_EVENTS)

    def transfer_start(self, primary: ProcessRecord, view_number: int) -> LogEvent | None:
        """The primary's ``catch_up_start`` or ``state_transfer_start`` line for the view: what
        the backup held (``backup_position``) and, for a full transfer, why (``reason``)."""
        return self.last_event(primary, view_number, ("catch_up_start", "state_transfer_start"))

    def last_event(
        self, record: ProcessRecord, view_number: int, names: tuple[str, ...]
    ) -> LogEvent | None:
        """The newest line of ``record``'s log for ``view_number`` naming one of ``names``."""
        return self.logs.newest_in_view(record.name, Path(record.log_file), view_number, names)

    # --- keeping the cluster ready between scenarios ----------------------------------------

    def ensure_ready(self) -> None:
        """Bring every server back (restart dead ones, resume paused ones, heal the network) and
        wait for an acknowledged view with a backup, so each scenario starts from health."""
        if self.faulted:
            self.heal()
        for record in list(self.state.servers()):
            current = processes.process_state(record.pid, record.argv)
            if current == "paused":
                self.resume(record)
            elif current == "dead":
                self.restart(record)
        self.wait_serving()
