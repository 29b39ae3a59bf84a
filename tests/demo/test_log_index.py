"""The demo's questions to the processes' logs (``pbkv.demo.log_index``): the same answers as
reading the whole log each time, from only what was appended since the previous question."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbkv.cluster.logs import LogEvent, LogFollower
from pbkv.demo import log_index
from pbkv.demo.log_index import LogIndex


def line(second: int, view: int, event: str, **fields: object) -> str:
    extra = "".join(f" {key}={value}" for key, value in fields.items())
    return f"2026-01-01T00:00:{second:02d}.000Z server=a view={view} {event}{extra}\n"


def append(log: Path, *lines: str) -> None:
    with open(log, "a", encoding="utf-8") as stream:
        stream.write("".join(lines))


def test_the_newest_line_of_an_event_follows_the_log(tmp_path: Path) -> None:
    log, index = tmp_path / "s1.log", LogIndex()
    assert index.newest("s1", log, "storage_recovered") is None  # no log yet
    append(log, line(1, 1, "storage_recovered", keys=3))
    recovered = index.newest("s1", log, "storage_recovered")
    assert recovered is not None and recovered.fields["keys"] == "3"
    append(log, line(2, 2, "storage_recovered", keys=5), line(3, 2, "view_learned"))
    recovered = index.newest("s1", log, "storage_recovered")
    assert recovered is not None and recovered.fields["keys"] == "5"


def test_the_newest_line_in_a_view_is_the_last_written_of_the_names(tmp_path: Path) -> None:
    log, index = tmp_path / "s1.log", LogIndex()
    names = ("catch_up_done", "state_transfer_done")
    append(log, line(1, 3, "state_transfer_done"), line(2, 3, "catch_up_done"))
    append(log, line(3, 4, "state_transfer_done"))
    found = index.newest_in_view("s1", log, 3, names)
    assert found is not None and found.event == "catch_up_done"
    append(log, line(4, 3, "state_transfer_done"))
    found = index.newest_in_view("s1", log, 3, names)
    assert found is not None and found.event == "state_transfer_done"
    assert index.newest_in_view("s1", log, 5, names) is None
    assert index.newest_in_view("s1", log, 3, ("view_fenced",)) is None


def test_a_line_still_being_written_is_not_read_half(tmp_path: Path) -> None:
    log, index = tmp_path / "s1.log", LogIndex()
    whole = line(1, 1, "disk_sync_slow", ms=250)
    append(log, whole[:30])
    assert index.newest("s1", log, "disk_sync_slow") is None
    append(log, whole[30:])
    found = index.newest("s1", log, "disk_sync_slow")
    assert found is not None and found.fields["ms"] == "250"


def test_a_long_backlog_is_read_in_steps_and_only_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_index, "READ_STEP_BYTES", 200)
    log, index = tmp_path / "s1.log", LogIndex()
    append(log, *(line(i % 60, 1, "noise") for i in range(100)), line(59, 1, "wanted"))
    read: list[int] = []
    real_poll = LogFollower.poll

    def poll(follower: LogFollower, max_bytes: int | None = None) -> list[LogEvent]:
        before = follower.offsets.get("s1", 0)
        events = real_poll(follower, max_bytes)
        read.append(follower.offsets["s1"] - before)
        return events

    monkeypatch.setattr(LogFollower, "poll", poll)
    assert index.newest("s1", log, "wanted") is not None
    assert sum(read) == log.stat().st_size and max(read) <= 200
    read.clear()
    assert index.newest("s1", log, "wanted") is not None  # nothing new: nothing read again
    assert read == [0]


def test_a_truncated_log_starts_over(tmp_path: Path) -> None:
    log, index = tmp_path / "s1.log", LogIndex()
    append(log, line(1, 1, "old"), line(2, 1, "old"))
    assert index.newest("s1", log, "old") is not None
    log.write_text(line(3, 1, "new"))
    assert index.newest("s1", log, "old") is None
    assert index.newest("s1", log, "new") is not None


def test_only_the_highest_views_are_kept(tmp_path: Path) -> None:
    log, index = tmp_path / "s1.log", LogIndex()
    views = log_index.VIEWS_KEPT + 5
    append(log, *(line(1, view, "view_learned") for view in range(1, views + 1)))
    assert index.newest_in_view("s1", log, views, ("view_learned",)) is not None
    assert index.newest_in_view("s1", log, 1, ("view_learned",)) is None
    assert len(index._logs["s1"].by_view) == log_index.VIEWS_KEPT
