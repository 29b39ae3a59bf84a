"""Reloading the credentials of a local cluster's running processes (``pbkv.runtime.reload``).

Theory of operation. A server or view service started with secret or TLS files reads them again
on SIGHUP; every process ``pbkv cluster up`` starts has its token file, so each of them does.
SIGHUP goes only to a process whose ``/proc/PID/status`` shows it catches the signal: to one
that does not (a release before reloads) it would be the end. etcd members are never signalled:
they read their certificate files again on each connection by themselves.

``reload_running`` is what the cluster manager does after renewing certificates (restart, add,
resume): signal and move on. ``reload_processes`` is ``pbkv cluster reload``: signal, then wait
for each process's own verdict in its log (``credentials_reloaded`` or
``credentials_reload_failed``), within ``timeout_s``, and report it per process.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pbkv.cluster import processes, startup
from pbkv.cluster.logs import events_after
from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.cluster.targets import record_event

VERDICTS: Final = {"credentials_reloaded": "reloaded", "credentials_reload_failed": "failed"}
"""A process's own line after SIGHUP (``pbkv.runtime.reload``) and what it means."""
RELOAD_WAIT_S_DEFAULT: Final = 10.0
POLL_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What one process made of the signal: ``reloaded``, ``failed``, ``not reloadable``
    (it does not catch SIGHUP), ``not running`` or ``no answer``; ``detail`` its log line's
    fields."""

    name: str
    outcome: str
    detail: str = ""


def signalable(record: ProcessRecord) -> bool:
    """A running server or view service that catches SIGHUP."""
    return processes.process_state(record.pid, record.argv) == "alive" and reloadable(record)


def reloadable(record: ProcessRecord) -> bool:
    """A server or view service whose process catches SIGHUP (checked without asking whether
    it runs, which the caller knows)."""
    return record.kind in ("server", "viewserver") and processes.catches(record.pid, signal.SIGHUP)


def reload_running(state: ClusterState, names: set[str]) -> None:
    """SIGHUP the running pbkv processes among ``names`` (their certificates were renewed), so
    they present the new ones now rather than after their next restart."""
    reloaded = [
        record.name
        for record in state.processes
        if record.name in names
        and signalable(record)
        and processes.send_signal(record.pid, signal.SIGHUP)
    ]
    if reloaded:
        record_event(state, "certificates_reloaded", names=",".join(reloaded))


def reload_processes(
    state: ClusterState, records: list[ProcessRecord], timeout_s: float = RELOAD_WAIT_S_DEFAULT
) -> list[ReloadOutcome]:
    """SIGHUP each of ``records`` that can take it and wait for its verdict (see the module
    docstring); one outcome per record, in order."""
    outcomes: dict[str, ReloadOutcome] = {}
    waiting: dict[str, tuple[ProcessRecord, int]] = {}
    for record in records:
        if processes.process_state(record.pid, record.argv) != "alive":
            outcomes[record.name] = ReloadOutcome(record.name, "not running")
        elif not reloadable(record):
            outcomes[record.name] = ReloadOutcome(record.name, "not reloadable")
        else:
            offset = startup.log_size(record)
            if processes.send_signal(record.pid, signal.SIGHUP):
                waiting[record.name] = (record, offset)
            else:
                outcomes[record.name] = ReloadOutcome(record.name, "not running")
    if waiting:
        record_event(state, "cluster_reload", names=",".join(waiting))
    deadline = time.monotonic() + timeout_s
    while waiting:
        for name, (record, offset) in list(waiting.items()):
            verdict = _verdict(record, offset)
            if verdict is not None:
                outcomes[name] = verdict
                del waiting[name]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    for name in waiting:
        outcomes[name] = ReloadOutcome(name, "no answer", f"no verdict in {timeout_s:g} s")
    return [outcomes[record.name] for record in records]


def _verdict(record: ProcessRecord, offset: int) -> ReloadOutcome | None:
    """The first reload line the process wrote after ``offset``, if any."""
    for found in events_after(Path(record.log_file), offset):
        outcome = VERDICTS.get(found.event)
        if outcome is not None:
            detail = " ".join(f"{key}={value}" for key, value in found.fields.items())
            return ReloadOutcome(record.name, outcome, detail)
    return None
