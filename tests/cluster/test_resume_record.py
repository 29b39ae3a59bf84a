"""``pbkv cluster up --resume`` and the state file, without processes (``start_and_wait`` is a
stand-in; test_resume.py has the real cluster): what it refuses, what it starts from, and that a
failed resume keeps the stopped record (docs/guide.md: "the record stays, so it can be tried
again"); what a state file of another version, an older one, or a damaged one becomes. Each test
fails on a mutant of ``pbkv.cluster.resume`` or ``pbkv.cluster.state`` that every suite passed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pbkv.cluster import manager, resume
from pbkv.cluster.state import (
    ClusterState,
    ProcessRecord,
    StateError,
    keep_stopped,
    load_state,
    load_stopped,
    save_state,
    state_path,
    stopped_path,
)
from pbkv.cluster.targets import ClusterError, ClusterFailed
from tests.cluster.inprocess import run_main


def _recorded(directory: Path, fsync: str | None, repair: bool = False) -> ClusterState:
    """A stopped cluster (no process runs: pid 0, port 0) of a view service and s1."""
    argv = ("python", "-m", "pbkv", "server", *(("--repair",) if repair else ()))
    records = tuple(
        ProcessRecord(name, kind, "idle", "127.0.0.1:0", 0, 0, 0, f"{name}.log", argv, 5.0)  # type: ignore[arg-type]
        for name, kind in (("viewserver", "viewserver"), ("s1", "server"))
    )
    return ClusterState(directory, "127.0.0.1:0", 0.05, 5, 0, 1.0, records, fsync=fsync)


def _stopped(directory: Path, fsync: str | None = "always", repair: bool = False) -> None:
    save_state(_recorded(directory, fsync, repair))
    state_path(directory).rename(stopped_path(directory))


def _with_data(directory: Path) -> None:
    (directory / "data" / "s1").mkdir(parents=True)
    (directory / "data" / "s1" / "LOCK").write_text("")


def test_a_stopped_record_whose_servers_kept_no_data_is_nothing_to_resume(tmp_path: Path) -> None:
    _stopped(tmp_path)
    with pytest.raises(ClusterError, match="holds no server's data: nothing to resume"):
        resume.stopped_cluster(tmp_path)
    assert stopped_path(tmp_path).exists()


def test_a_cluster_in_memory_is_nothing_to_resume_and_its_state_file_stays(tmp_path: Path) -> None:
    _with_data(tmp_path)
    save_state(_recorded(tmp_path, None))  # every process of it died
    with pytest.raises(ClusterError, match="kept its data in memory only"):
        resume.stopped_cluster(tmp_path)
    assert state_path(tmp_path).exists() and not stopped_path(tmp_path).exists()
    state_path(tmp_path).rename(stopped_path(tmp_path))  # a record of one written by hand
    with pytest.raises(ClusterError, match="kept its data in memory only"):
        resume.stopped_cluster(tmp_path)


def test_resume_starts_the_recorded_processes_without_repair_and_keeps_a_failed_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_data(tmp_path)
    _stopped(tmp_path, repair=True)  # s1 was last started by `restart --repair`
    planned: list[list[ProcessRecord]] = []

    def fails(state: ClusterState, plans: list[ProcessRecord], *args: object) -> ClusterState:
        planned.append(plans)
        raise ClusterFailed("s1 did not start")

    monkeypatch.setattr(manager, "start_and_wait", fails)
    with pytest.raises(ClusterFailed):
        resume.resume(tmp_path)
    assert stopped_path(tmp_path).exists()  # it can be tried again
    [plans] = planned
    assert [(p.name, p.pid, p.started_at) for p in plans] == [
        ("viewserver", 0, 0.0),
        ("s1", 0, 0.0),
    ]
    assert all("--repair" not in p.argv for p in plans)  # --repair was for one start only
    monkeypatch.setattr(manager, "start_and_wait", lambda state, plans, *args: state)
    resume.resume(tmp_path)
    assert not stopped_path(tmp_path).exists()


def test_a_state_file_of_another_version_or_without_processes_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    save_state(_recorded(tmp_path, None))
    data = json.loads(state_path(tmp_path).read_text())
    state_path(tmp_path).write_text(json.dumps({**data, "version": 2}))
    with pytest.raises(StateError, match=r"is damaged \(ValueError\('unknown version 2'\)\)"):
        load_state(tmp_path)
    del data["processes"]
    state_path(tmp_path).write_text(json.dumps(data))
    code, out, err = run_main(monkeypatch, capsys, tmp_path, "cluster", "status", "--dir", ".")
    assert (code, out) == (4, "")  # refused, one line, no traceback
    damaged = "cluster.json is damaged (KeyError('processes')); remove it by hand"
    assert err == f"pbkv: error: {damaged}\n"


def test_a_state_file_written_before_later_fields_loads_with_their_defaults(tmp_path: Path) -> None:
    state = _recorded(tmp_path, None)
    save_state(state)
    data = json.loads(state_path(tmp_path).read_text())
    for field in ("fsync", "backups", "read_leases", "forget_after_s"):
        del data[field]
    for process in data["processes"]:
        del process["restarts"], process["env"]
    state_path(tmp_path).write_text(json.dumps(data))
    assert load_state(tmp_path) == state


def test_a_running_cluster_is_loaded_while_its_stopped_record_is_still_there(
    tmp_path: Path,
) -> None:
    """``up --resume`` records each process as it starts and removes the stopped record once
    the cluster serves: meanwhile (and after an ``add``), commands find the running cluster."""
    _stopped(tmp_path)
    running = replace(_recorded(tmp_path, "always"), created_at=2.0)
    save_state(running)
    assert load_state(tmp_path) == running


def test_down_keeps_the_state_file_as_the_record_unless_the_record_names_more(
    tmp_path: Path,
) -> None:
    _stopped(tmp_path)
    later = _recorded(tmp_path, "always")
    later = later.replace_process(replace(later.processes[1], restarts=2))
    save_state(later)  # the same processes, restarted since: the newer record
    keep_stopped(tmp_path)
    assert load_stopped(tmp_path) == later and not state_path(tmp_path).exists()
    stopped_path(tmp_path).write_text("{damaged")
    save_state(later)
    keep_stopped(tmp_path)  # a damaged record: the state file is the one to keep
    assert load_stopped(tmp_path) == later
