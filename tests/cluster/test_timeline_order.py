"""The merged timeline and the follower of ``pbkv cluster logs`` in the cases the other log
tests leave out: a cause whose place is settled only after the effect's file was read, and a
log started anew (``up`` truncates it) while it is followed. Each test fails on a mutant every
suite passed."""

from __future__ import annotations

from pathlib import Path

from pbkv.cluster.logs import LogFollower, timeline


def _line(ts: str, node: str, view: int, event: str) -> str:
    return f"2026-11-21T19:30:{ts}Z {node} view={view} {event}\n"


def test_an_effect_follows_a_cause_raised_by_a_file_read_after_it(tmp_path: Path) -> None:
    """s1's clock is behind: its view_learned is stamped 100 ms before the view_change that
    caused it, so its state_transfer_done lands after that view_change; the view service's
    acknowledgement, stamped in the same millisecond as the view_change, must still follow
    state_transfer_done, which is known only once s1's file is read (a second settling pass)."""
    files = {
        "viewserver": _line("01.500", "viewserver=vs", 3, "view_change primary=a backup=b")
        + _line("01.500", "viewserver=vs", 3, "view_acknowledged primary=a"),
        "s1": _line("01.400", "server=a", 3, "view_learned role=primary")
        + _line("01.405", "server=a", 3, "state_transfer_done backup=b"),
        "s2": _line("01.404", "server=b", 3, "state_transfer_received bytes=1"),
    }
    for name, text in files.items():
        (tmp_path / f"{name}.log").write_text(text)
    order = [e.event for e in timeline({name: tmp_path / f"{name}.log" for name in files})]
    assert order == [
        "state_transfer_received",
        "view_change",
        "view_learned",
        "state_transfer_done",
        "view_acknowledged",
    ]


def test_a_followed_log_started_anew_is_read_from_its_start(tmp_path: Path) -> None:
    """``logs --follow`` (and the dashboard) across ``down`` and ``up``: the new cluster's log
    is shorter than where the follower stopped; its lines were never shown."""
    log = tmp_path / "s1.log"
    log.write_text("".join(_line(f"0{i}.000", "server=a", 1, f"old{i}") for i in range(5)))
    follower = LogFollower({"s1": log})
    assert len(follower.poll()) == 5
    log.write_text(_line("09.000", "server=a", 1, "new"))  # truncated, then written
    assert [e.event for e in follower.poll()] == ["new"]


def test_catch_up_reads_a_log_started_anew_to_its_end(tmp_path: Path) -> None:
    log = tmp_path / "viewserver.log"
    line = _line("01.000", "viewserver=vs", 1, "view_change")
    log.write_text(line * 10)
    follower = LogFollower({"viewserver": log})
    assert len(list(follower.catch_up(step_bytes=len(line)))) == 10
    log.write_text(line * 3)  # shorter than where it stopped
    assert len(list(follower.catch_up(step_bytes=len(line)))) == 3
