"""The roles ``pbkv cluster status`` shows and the expectation ``partition``/``isolate`` print,
for the cases test_status_collect.py and test_fault_notes.py leave out: a killed primary the
view service has not yet replaced, a view with two backups, a view service isolated, a primary
with no backup to promote. Pure, or with the view service as a stand-in (``monkeypatch``); each
test fails on a mutant every suite passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbkv.cluster import fault_notes, processes, status
from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.cluster.status import collect, view_note
from pbkv.core.messages import View, ViewServiceStatus

VS = "127.0.0.1:7000"
S = {f"s{i}": f"127.0.0.1:700{i}" for i in range(1, 5)}
VIEW = View(2, S["s1"], (S["s2"],))
PID = 90_000
"""The view service's pid; server sK's is PID + K (no process: its state is a stand-in)."""


def _state(directory: Path, servers: int = 3) -> ClusterState:
    records = [
        ProcessRecord("viewserver", "viewserver", "viewserver", VS, PID, 0, 0, "vs.log", (), 0.0)
    ]
    records += [
        ProcessRecord(name, "server", "idle", S[name], PID + i, 0, 0, f"{name}.log", (), 0.0)
        for i, name in enumerate(list(S)[:servers], start=1)
    ]
    return ClusterState(directory, VS, 0.1, 5, 0, 0.0, tuple(records))


def _notes(state: ClusterState, a: str, b: str, view: View, one_way: bool = False) -> str:
    first, second = state.find(a), state.find(b)
    assert first is not None and second is not None
    return fault_notes.partition_notes(state, first, second, one_way, view)[1]


def test_a_dead_server_keeps_the_role_the_view_gives_it_and_every_backup_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """s1 was just killed: the view service still names it primary (until the dead interval),
    and that is what the table must show beside "dead", not "-"."""
    state = _state(tmp_path, servers=4)
    view = View(7, S["s1"], (S["s2"], S["s3"]))
    dead = {PID + 1, PID + 4}  # s1, and s4 (in no view)
    monkeypatch.setattr(
        processes, "process_state", lambda pid, argv=None: "dead" if pid in dead else "alive"
    )
    answer = ViewServiceStatus(view, True, True, (), 7, 0, 100)
    monkeypatch.setattr(status, "viewserver_status", lambda address, timeout: answer)
    monkeypatch.setattr(status, "_dump_header", lambda record: None)
    roles = {node.record.name: (node.state, node.role) for node in collect(state).nodes}
    assert roles == {
        "viewserver": ("alive", "viewserver"),
        "s1": ("dead", "primary"),
        "s2": ("alive", "backup"),
        "s3": ("alive", "backup"),
        "s4": ("dead", "-"),
    }


def test_a_complaint_of_the_view_service_is_not_guessed_over() -> None:
    assert view_note(0, "server", 1) == "no view yet (restarting)"
    assert view_note(0, "server", 1, health="its disk holds another cluster") == "no view yet"


def test_no_view_yet_means_no_roles() -> None:
    record = ProcessRecord("s1", "server", "idle", S["s1"], 0, 0, 0, "s1.log", (), 0.0)
    assert fault_notes.role_of(record, View(0)) is None
    assert fault_notes.label(record, View(0)) == f"s1 ({S['s1']})"
    assert fault_notes.label(record, VIEW) == f"s1 (primary, {S['s1']})"


def test_isolating_the_only_view_service_leaves_the_primary_in_place(tmp_path: Path) -> None:
    state = _state(tmp_path)
    expect = fault_notes.isolate_notes(state, state.processes[0], VIEW)[1]
    assert expect.startswith(
        "expect: no ping reaches viewserver: after about 0.5 s it declares every server dead"
    )
    assert "never replaces the primary (V5)" in expect


def test_a_cut_between_the_view_service_and_the_primary_reads_the_same_both_ways(
    tmp_path: Path,
) -> None:
    state = _state(tmp_path)
    both = _notes(state, "viewserver", "s1", VIEW)
    assert both == _notes(state, "s1", "viewserver", VIEW)
    assert both.startswith("expect: the view service stops hearing s1: after about 0.5 s")
    assert "promotes a backup" in both


def test_a_primary_without_a_backup_is_not_replaced(tmp_path: Path) -> None:
    expect = _notes(_state(tmp_path), "s1", "viewserver", View(2, S["s1"]))
    assert expect.endswith("but there is no backup to promote (N1): the view stays until heal")


def test_two_servers_that_exchange_nothing_change_nothing(tmp_path: Path) -> None:
    expect = _notes(_state(tmp_path), "s3", "s2", VIEW)
    assert expect.startswith("expect: s3 and s2 exchange nothing in the current view")
