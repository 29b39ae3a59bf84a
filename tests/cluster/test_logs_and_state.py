"""Log parsing, timeline merging and the state file, without processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pbkv.cluster.logs import RAW_EVENT, LogEvent, LogFollower, parse_line, timeline, window
from pbkv.cluster.state import (
    ClusterState,
    ProcessRecord,
    StateError,
    load_state,
    save_state,
)
from pbkv.cluster.status import count_failovers
from pbkv.cluster.targets import ClusterError, resolve

HUMAN = (
    "2026-11-21T19:30:01.123Z server=127.0.0.1:7001 view=3 view_learned role=primary "
    'view="view 3 (primary=127.0.0.1:7001, backup=-)"'
)


def test_a_human_line_parses_with_quoted_fields() -> None:
    event = parse_line(HUMAN, "s1")
    assert event.source == "s1"
    assert event.kind == "server" and event.node == "127.0.0.1:7001"
    assert event.view == 3 and event.event == "view_learned"
    assert event.fields == {"role": "primary", "view": "view 3 (primary=127.0.0.1:7001, backup=-)"}
    assert event.render().startswith("2026-11-21T19:30:01.123Z s1 view=3 view_learned role=")


def test_a_json_line_parses_to_the_same_event() -> None:
    line = json.dumps(
        {
            "ts": "2026-11-21T19:30:01.123Z",
            "node": "127.0.0.1:7001",
            "kind": "server",
            "view": 3,
            "event": "view_learned",
            "role": "primary",
        }
    )
    event = parse_line(line, "s1")
    human = parse_line(HUMAN, "s1")
    assert (event.ts, event.node, event.view, event.event) == (
        human.ts,
        human.node,
        human.view,
        human.event,
    )
    assert event.fields == {"role": "primary"}


def test_other_lines_become_output_stamped_with_the_previous_line() -> None:
    event = parse_line("Traceback (most recent call last):", "s1", previous_ts=12.5)
    assert event.event == RAW_EVENT and event.ts == 12.5
    assert event.render().endswith("s1 | Traceback (most recent call last):")


def _write(path: Path, *lines: str) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def test_timeline_merges_files_in_time_order_and_windows(tmp_path: Path) -> None:
    _write(
        tmp_path / "a.log",
        "2026-01-01T00:00:01.000Z server=a view=1 one",
        "2026-01-01T00:00:03.000Z server=a view=1 three",
    )
    _write(tmp_path / "b.log", "2026-01-01T00:00:02.000Z viewserver=b view=1 two")
    events = timeline({"a": tmp_path / "a.log", "b": tmp_path / "b.log"})
    assert [e.event for e in events] == ["one", "two", "three"]
    assert [e.event for e in window(events, events[1].ts, 1.0)] == ["one", "two", "three"]
    assert [e.event for e in window(events, events[1].ts, 0.5)] == ["two"]


def test_follower_returns_only_complete_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("2026-01-01T00:00:01.000Z server=a view=1 one\n2026-01-01T00:00:02")
    follower = LogFollower({"a": log})
    assert [e.event for e in follower.poll()] == ["one"]
    with open(log, "a") as stream:
        stream.write(".000Z server=a view=1 two\n")
    assert [e.event for e in follower.poll()] == ["two"]
    assert follower.poll() == []


def test_follower_takes_a_backlog_in_bounded_steps(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    line = "2026-01-01T00:00:01.000Z server=a view=1 step\n"
    log.write_text(line * 10)
    follower = LogFollower({"a": log})
    first = follower.poll(max_bytes=len(line) * 3 + 5)  # three lines and part of a fourth
    assert (len(first), follower.caught_up) == (3, False)
    rest = follower.poll(max_bytes=len(line) * 100)
    assert (len(rest), follower.caught_up) == (7, True)


def test_catch_up_reads_in_steps_only_what_was_there_and_parses_only_named_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "a.log"
    wanted = "2026-01-01T00:00:01.000Z server=a view=1 wanted\n"
    pair = wanted + "2026-01-01T00:00:01.000Z server=a view=1 other\n"
    log.write_text(pair * 10)
    follower = LogFollower({"a": log}, events=("wanted",))
    polls: list[int | None] = []
    real_poll = follower.poll

    def poll_while_the_log_grows(max_bytes: int | None = None) -> list[LogEvent]:
        polls.append(max_bytes)
        with open(log, "a") as stream:
            stream.write(pair)  # a writer faster than the reader must not keep it reading
        return real_poll(max_bytes)

    monkeypatch.setattr(follower, "poll", poll_while_the_log_grows)
    events = list(follower.catch_up(step_bytes=len(pair) * 3))
    assert polls == [len(pair) * 3] * 4  # 1 + 10 // 3 steps of at most 3 pairs
    assert [event.event for event in events] == ["wanted"] * 12


def test_failovers_count_only_replaced_primaries(tmp_path: Path) -> None:
    _write(
        tmp_path / "vs.log",
        "2026-01-01T00:00:01.000Z viewserver=v view=1 view_change primary=a backup=- "
        "previous_primary=- previous_backup=-",
        "2026-01-01T00:00:02.000Z viewserver=v view=2 view_change primary=a backup=b "
        "previous_primary=a previous_backup=-",
        "2026-01-01T00:00:03.000Z viewserver=v view=3 view_change primary=b backup=c "
        "previous_primary=a previous_backup=b",
    )
    assert count_failovers(timeline({"viewserver": tmp_path / "vs.log"})) == 1


def _state(directory: Path) -> ClusterState:
    record = ProcessRecord(
        name="s1",
        kind="server",
        role_at_start="primary",
        address="127.0.0.1:7001",
        pid=123,
        admin_port=7101,
        metrics_port=7201,
        log_file=str(directory / "logs" / "s1.log"),
        argv=("python", "-m", "pbkv", "server"),
        started_at=1.0,
    )
    return ClusterState(directory, "127.0.0.1:7000", 0.1, 5, 7000, 1.0, (record,))


def test_state_file_round_trips_and_is_replaced_atomically(tmp_path: Path) -> None:
    state = _state(tmp_path)
    save_state(state)
    assert load_state(tmp_path) == state
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.json"]  # no temporary left


def test_missing_or_damaged_state_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no cluster in"):
        load_state(tmp_path)
    (tmp_path / "cluster.json").write_text("{not json")
    with pytest.raises(StateError, match="cannot read"):
        load_state(tmp_path)


def test_targets_resolve_by_name_and_address(tmp_path: Path) -> None:
    state = _state(tmp_path)
    assert resolve(state, "s1").name == "s1"
    assert resolve(state, "127.0.0.1:7001").name == "s1"
    with pytest.raises(ClusterError, match="unknown target 'nope'"):
        resolve(state, "nope")


def _line(ms: int, node: str, view: int, event: str) -> str:
    return f"2026-11-21T19:30:01.{ms:03d}Z {node} view={view} {event}"


def test_the_timeline_never_prints_an_effect_before_its_cause(tmp_path: Path) -> None:
    # the primary's line is stamped 3 ms after the view service's acknowledgement it caused
    files = {
        "viewserver": [
            _line(100, "viewserver=vs", 4, "view_change primary=a backup=b"),
            _line(110, "viewserver=vs", 4, "view_acknowledged primary=a"),
            _line(111, "viewserver=vs", 4, "server_returned server=c"),
        ],
        "s1": [
            _line(105, "server=a", 4, "view_learned role=primary"),
            _line(113, "server=a", 4, "state_transfer_done backup=b bytes=10"),
        ],
        "s2": [
            _line(99, "server=b", 4, "view_learned role=backup"),  # stamped before view_change
            _line(112, "server=b", 4, "state_transfer_received bytes=10"),
        ],
    }
    logs = {}
    for name, lines in files.items():
        (tmp_path / f"{name}.log").write_text("\n".join(lines) + "\n")
        logs[name] = tmp_path / f"{name}.log"
    order = [(e.source, e.event) for e in timeline(logs)]
    assert order.index(("s2", "state_transfer_received")) < order.index(
        ("s1", "state_transfer_done")
    )
    assert order.index(("s1", "state_transfer_done")) < order.index(
        ("viewserver", "view_acknowledged")
    )
    assert order.index(("viewserver", "view_change")) < order.index(("s2", "view_learned"))
    # each file keeps its own order: what the view service logged after the ack stays after it
    assert order.index(("viewserver", "view_acknowledged")) < order.index(
        ("viewserver", "server_returned")
    )
    by_time = sorted(timeline(logs), key=lambda e: e.ts)  # what a plain sort would print
    plain = [(e.source, e.event) for e in by_time]
    assert plain.index(("viewserver", "view_acknowledged")) < plain.index(
        ("s1", "state_transfer_done")
    )


def test_a_fault_of_the_cluster_layer_is_an_event_line_of_the_timeline(tmp_path: Path) -> None:
    from pbkv.cluster.logs import CLUSTER_LOG_NAME, record_cluster_event

    record_cluster_event(tmp_path, "cluster_kill", 1_790_000_000.25, target="s1", signal="KILL")
    event = parse_line((tmp_path / CLUSTER_LOG_NAME).read_text(), "cluster")
    assert (event.kind, event.event, event.fields) == (
        "cluster",
        "cluster_kill",
        {"target": "s1", "signal": "KILL"},
    )
    assert event.ts == 1_790_000_000.25
    assert " cluster view=- cluster_kill target=s1 signal=KILL" in event.render()


def test_a_new_cluster_keeps_nothing_of_the_previous_clusters_logs(tmp_path: Path) -> None:
    """`up` in a directory a cluster ran in: its faults (cluster.log) and the log of a server
    the new cluster has not (s4) are gone, so `pbkv cluster logs` and the dashboard's timeline
    show no kill of a process of the previous cluster."""
    from pbkv.cluster.logs import CLUSTER_LOG_NAME, record_cluster_event
    from pbkv.cluster.manager import start_new_logs
    from pbkv.cluster.state import logs_dir

    state = _state(tmp_path)
    logs = logs_dir(tmp_path)
    logs.mkdir()
    record_cluster_event(logs, "cluster_kill", 1_790_000_000.25, target="s2", signal="KILL")
    for name in ("s1", "s4"):
        (logs / f"{name}.log").write_text(_line(100, "server=x", 2, "role_change") + "\n")
    start_new_logs(tmp_path, list(state.processes))
    assert sorted(p.name for p in logs.iterdir()) == ["s1.log"]
    assert (logs / "s1.log").read_text() == ""
    assert not (logs / CLUSTER_LOG_NAME).exists()


def test_an_event_no_line_has_is_named_on_stderr_with_the_close_ones(tmp_path: Path) -> None:
    """A typo in --event printed nothing, exit 0, as if the event had not happened (review)."""
    from click.testing import CliRunner

    from pbkv.cli.main import cli

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "viewserver.log").write_text(
        _line(100, "viewserver=vs", 1, "view_change primary=a backup=-") + "\n"
    )
    arguments = ["cluster", "logs", "--dir", str(tmp_path), "--event", "view_chnage"]
    result = CliRunner().invoke(cli, arguments)
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == "pbkv: no line has the event view_chnage (did you mean view_change?)\n"
    found = CliRunner().invoke(cli, [*arguments[:-1], "view_change"])
    assert "view_change primary=a" in found.stdout and found.stderr == ""
