"""``pbkv cluster status`` without processes: failovers counted from what the view service log
gained since the previous count, and the cluster id and each server's health (V16) in the JSON
and the text. The view service and the servers are stand-ins (``monkeypatch``)."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import click
import pytest

from pbkv.cluster import logs, processes, status
from pbkv.cluster.render import status_text
from pbkv.cluster.rpc import NoAnswer
from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.cluster.status import FailoverCounter, collect
from pbkv.core.messages import DumpReply, ServerStatus, View, ViewServiceStatus, cluster_label

PRIMARY, BACKUP, IDLE = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"
CLUSTER_ID = 0x1F3C9A0B2D4E5F60
FOREIGN = "its disk holds cluster 00000000000000aa, not this one: no role (V16)"


def _view_change(number: int, primary: str, previous: str) -> str:
    return (
        f"2026-01-01T00:00:{number:02d}.000Z viewserver=127.0.0.1:7000 view={number} "
        f"view_change primary={primary} backup=- previous_primary={previous} previous_backup=-\n"
    )


def _noise(number: int) -> str:
    return f"2026-01-01T00:00:{number:02d}.500Z viewserver=127.0.0.1:7000 view={number} pinged\n"


def _record(name: str, kind: str, address: str, log: Path) -> ProcessRecord:
    return ProcessRecord(
        name, kind, "idle", address, pid=os.getpid(), admin_port=1, metrics_port=2,  # type: ignore[arg-type]
        log_file=str(log), argv=(), started_at=0.0,
    )  # fmt: skip


def _state(directory: Path) -> ClusterState:
    logs_dir = directory / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    records = [_record("viewserver", "viewserver", "127.0.0.1:7000", logs_dir / "vs.log")]
    records += [
        _record(name, "server", address, logs_dir / f"{name}.log")
        for name, address in (("s1", PRIMARY), ("s2", BACKUP), ("s3", IDLE))
    ]
    return ClusterState(directory, "127.0.0.1:7000", 0.1, 5, 0, 0.0, tuple(records))


def _parsed_lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every line the log reader parses from now on."""
    parsed: list[str] = []
    real = logs.parse_line

    def spy(line: str, source: str, previous_ts: float = 0.0) -> logs.LogEvent:
        parsed.append(line)
        return real(line, source, previous_ts)

    monkeypatch.setattr(logs, "parse_line", spy)
    return parsed


def test_repeated_counts_read_only_what_the_log_gained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _state(tmp_path)
    log = Path(state.processes[0].log_file)
    log.write_text(_view_change(1, "a", "-") + _noise(1) + _view_change(2, "b", "a"))
    parsed = _parsed_lines(monkeypatch)
    counter = FailoverCounter()
    assert counter.count(state) == 1
    assert len(parsed) == 2  # only the view_change lines are parsed
    with open(log, "a") as stream:
        stream.write(_noise(2) + _view_change(3, "c", "b") + _view_change(4, "c", "c")[:30])
    parsed.clear()
    assert counter.count(state) == 2
    assert parsed == [_view_change(3, "c", "b").rstrip("\n")]  # the new line, nothing before
    parsed.clear()
    assert counter.count(state) == 2 and parsed == []
    log.write_text(_view_change(1, "a", "-"))  # truncated
    assert counter.count(state) == 0


def test_a_new_cluster_or_another_file_is_counted_from_its_start(tmp_path: Path) -> None:
    state = _state(tmp_path)
    log = Path(state.processes[0].log_file)
    two = _view_change(1, "a", "b") + _view_change(2, "b", "a")
    log.write_text(two)
    counter = FailoverCounter()
    assert counter.count(state) == 2
    # `up` again (a new created_at): the new log outgrew the last count's offset
    log.write_text(
        _view_change(1, "a", "-") + _view_change(2, "b", "a") + _view_change(3, "a", "b")
    )
    again = replace(state, created_at=1.0)
    assert counter.count(again) == 2
    replacement = tmp_path / "new.log"
    replacement.write_text(two + two)
    os.replace(replacement, log)  # another file under the same name, longer than the last
    assert counter.count(again) == 4
    assert counter.count(replace(again, processes=())) == 0  # forgotten
    assert counter.count(again) == 4


def _fakes(monkeypatch: pytest.MonkeyPatch, answer: ViewServiceStatus | None) -> None:
    monkeypatch.setattr(processes, "process_state", lambda pid, argv: "alive")
    monkeypatch.setattr(status, "viewserver_status", lambda address, timeout: answer)

    def dump(record: ProcessRecord) -> DumpReply:
        role = {PRIMARY: "primary", BACKUP: "backup"}.get(record.address, "idle")
        return DumpReply(record.address, role, "serving", answer_view, True, 3, 0, (), 0)

    answer_view = answer.view if answer else View(0)
    monkeypatch.setattr(status, "_dump_header", dump)


def _answer(view: View) -> ViewServiceStatus:
    servers = (
        ServerStatus(PRIMARY, 1, 2, 2, True),
        ServerStatus(BACKUP, 1, 2, 2, True),
        ServerStatus(IDLE, 1, 0, 0, True, health=FOREIGN),
    )
    return ViewServiceStatus(view, True, True, servers, 2, 0, 100, cluster_id=CLUSTER_ID)


def test_status_shows_the_cluster_id_and_why_a_server_has_no_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _state(tmp_path)
    Path(state.processes[0].log_file).write_text(_view_change(1, PRIMARY, "-"))
    view = View(2, PRIMARY, (BACKUP,))
    _fakes(monkeypatch, _answer(view))
    counter = FailoverCounter()
    found = collect(state, counter)
    data = found.to_json()
    assert data["cluster"] == "1f3c9a0b2d4e5f60" == cluster_label(found.cluster_id)
    assert [node["health"] for node in data["nodes"]] == ["", "", "", FOREIGN]
    assert [node["role"] for node in data["nodes"]] == ["viewserver", "primary", "backup", "idle"]
    lines = click.unstyle(status_text(found)).splitlines()
    assert lines[0].startswith("view 2: primary=127.0.0.1:7001 backup=127.0.0.1:7002")
    assert lines[0].endswith("failovers so far: 0; cluster 1f3c9a0b2d4e5f60")
    assert lines[1].split()[:2] == ["NAME", "ADDRESS"] and len(lines) == 1 + 5 + 1
    assert lines[-1] == f"s3: {FOREIGN}"
    with open(state.processes[0].log_file, "a") as stream:
        stream.write(_view_change(3, BACKUP, PRIMARY))
    assert collect(state, counter).failovers == 1 == collect(state).failovers


def test_a_silent_view_service_has_no_cluster_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fakes(monkeypatch, None)
    monkeypatch.setattr(status, "viewserver_status", _no_answer)
    found = collect(_state(tmp_path))
    assert found.to_json()["cluster"] == "-" and found.service is None
    assert status_text(found).splitlines()[0] == (
        "view service 127.0.0.1:7000 is not answering: the current view is unknown; VIEW shows "
        "the last view each server heard of, and its role in it"
    )


def _no_answer(address: str, timeout: float) -> ViewServiceStatus:
    raise NoAnswer(f"{address}: timed out")


def _restarted_s2_without_a_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: ViewServiceStatus | None
) -> ClusterState:
    """s2 restarted once and has not learned a view yet: its own view is number 0."""
    state = _state(tmp_path)
    records = tuple(replace(p, restarts=1) if p.name == "s2" else p for p in state.processes)
    monkeypatch.setattr(processes, "process_state", lambda pid, argv: "alive")
    monkeypatch.setattr(status, "viewserver_status", lambda address, timeout: answer)
    if answer is None:
        monkeypatch.setattr(status, "viewserver_status", _no_answer)
    held = answer.view if answer is not None else View(3, PRIMARY, (IDLE,))

    def dump(record: ProcessRecord) -> DumpReply:
        if record.name == "s2":
            return DumpReply(record.address, "idle", "idle", View(0), False, 0, 0, (), 0)
        role = "primary" if record.address == PRIMARY else "backup"
        return DumpReply(record.address, role, "serving", held, True, 3, 0, (), 0)

    monkeypatch.setattr(status, "_dump_header", dump)
    return replace(state, processes=records)


@pytest.mark.parametrize("service_answers", [True, False])
def test_a_server_without_its_first_view_says_so_instead_of_view_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service_answers: bool
) -> None:
    """Seen in the guide's walk-through: a restarting backup showed VIEW "0" (or "0 (thinks
    idle)" while the view service was silent), a number that means nothing to a reader."""
    view = View(3, PRIMARY, (IDLE,))
    answer = ViewServiceStatus(view, True, True, (), 3, 1, 100) if service_answers else None
    found = collect(_restarted_s2_without_a_view(tmp_path, monkeypatch, answer))
    lines = click.unstyle(status_text(found)).splitlines()
    cells = {line.split()[0]: re.split(r"\s{2,}", line) for line in lines[1:]}
    assert cells["NAME"][5] == "VIEW"
    assert cells["s2"][5] == "no view yet (restarting)"  # not "0", nor "0 (thinks idle)"
    assert cells["s1"][5] == "3" if service_answers else "3, primary (as it last knew)"
    nodes = {node["name"]: node for node in found.to_json()["nodes"]}
    assert nodes["s2"]["own_view"] == 0  # the JSON keeps its types; the words are beside
    assert nodes["s2"]["own_view_note"] == "no view yet (restarting)"
    assert nodes["s1"]["own_view"] == 3 and nodes["s1"]["own_view_note"] == ""


@pytest.mark.parametrize(
    ("pinged", "waiting", "expected"),
    [
        (
            False,
            "",
            "no view yet: no server has pinged the view service (127.0.0.1:7000); the first one "
            "to ping becomes primary of view 1, once the service has listened for a dead "
            "interval since it started (V11)",
        ),
        (
            True,
            "",
            "no view yet: the view service (127.0.0.1:7000) forms view 1, with the first server "
            "that pinged it as primary, once it has listened for a dead interval since it "
            "started (V11)",
        ),
        (True, "servers hold view 4 (...) (N2)", "no view yet: servers hold view 4 (...) (N2)"),
    ],
)
def test_before_view_1_the_summary_says_no_view_yet_and_what_forms_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinged: bool, waiting: str, expected: str
) -> None:
    """Seen during `pbkv cluster up`: "view 0: primary=- backup=- (not yet acknowledged);
    failovers so far: 0; cluster -", a view that does not exist (and the view service's row
    said "no server pinged yet" while s1 had pinged, in the service's first dead interval)."""
    servers = (ServerStatus(PRIMARY, 1, 0, 0, True),) if pinged else ()
    _fakes(monkeypatch, ViewServiceStatus(View(0), False, False, servers, 0, 0, 3, waiting))
    found = collect(_state(tmp_path))
    lines = click.unstyle(status_text(found)).splitlines()
    assert lines[0] == expected
    view = found.to_json()["view"]
    assert view["number"] == 0 and view["note"] == expected  # --json: the same words beside
    assert re.split(r"\s{2,}", lines[2])[:6] == [
        "viewserver", "127.0.0.1:7000", str(os.getpid()), "alive", "viewserver", "no view yet"
    ]  # fmt: skip


@pytest.mark.parametrize("vs_state", ["paused", "dead", "alive"])
def test_while_the_view_service_is_silent_each_server_shows_what_it_last_knew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vs_state: str
) -> None:
    """Seen with the view service paused: every server read "2 (thinks primary)", "2 (thinks
    backup)" ..., as if the view service disagreed with each one, when it said nothing."""
    _fakes(monkeypatch, None)
    monkeypatch.setattr(status, "viewserver_status", _no_answer)
    held = View(2, PRIMARY, (BACKUP,))

    def dump(record: ProcessRecord) -> DumpReply:
        role = {PRIMARY: "primary", BACKUP: "backup"}.get(record.address, "idle")
        return DumpReply(record.address, role, "serving", held, True, 3, 0, (), 0)

    monkeypatch.setattr(status, "_dump_header", dump)
    states = {"viewserver": vs_state}
    monkeypatch.setattr(
        processes, "process_state", lambda pid, argv: states.pop("viewserver", "alive")
    )
    found = collect(_state(tmp_path))
    lines = click.unstyle(status_text(found)).splitlines()
    why = "" if vs_state == "alive" else f" ({vs_state})"
    assert lines[0].startswith(f"view service 127.0.0.1:7000 is not answering{why}: ")
    cells = {line.split()[0]: re.split(r"\s{2,}", line) for line in lines[1:]}
    assert [cells[name][4:6] for name in ("s1", "s2", "s3")] == [
        ["-", "2, primary (as it last knew)"],
        ["-", "2, backup (as it last knew)"],
        ["-", "2, idle (as it last knew)"],
    ]
    assert "thinks" not in "\n".join(lines)


def test_a_dead_view_service_member_shows_no_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen with `pbkv cluster up --etcd` and `pbkv cluster kill viewserver2`: the dead member's
    VIEW read "2", the view the leader holds, as if a dead process knew it."""
    state = _state(tmp_path)
    first = state.processes[0]
    members = (
        first,
        replace(first, name="viewserver2", address="127.0.0.1:7010", pid=-2),  # dead
        replace(first, name="viewserver3", address="127.0.0.1:7020"),
    )
    state = replace(
        state,
        viewserver="127.0.0.1:7000,127.0.0.1:7010,127.0.0.1:7020",
        processes=members + state.servers(),
    )
    _fakes(monkeypatch, _answer(View(2, PRIMARY, (BACKUP,))))
    monkeypatch.setattr(
        processes, "process_state", lambda pid, argv: "dead" if pid == -2 else "alive"
    )
    monkeypatch.setattr(status, "leader_of", lambda state: "127.0.0.1:7000")
    found = collect(state)
    lines = click.unstyle(status_text(found)).splitlines()
    cells = {line.split()[0]: re.split(r"\s{2,}", line) for line in lines[1:]}
    assert cells["viewserver"][3:6] == ["alive", "vs-leader", "2"]
    assert cells["viewserver2"][3:6] == ["dead", "-", "-"]  # was "2"
    assert cells["viewserver3"][3:6] == ["alive", "vs-follower", "-"]
    nodes = {node["name"]: node for node in found.to_json()["nodes"]}
    assert nodes["viewserver2"]["own_view"] is None and nodes["viewserver"]["own_view"] == 2
