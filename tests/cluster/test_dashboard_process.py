"""Starting detached processes: the dashboard of ``pbkv cluster up --dashboard``
(``pbkv.cluster.web``), started for real with a stand-in command that prints the URL line as
``pbkv dashboard`` does, and ``process_state`` on a process caught mid-exec."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from pbkv.cluster import processes, web

PRINTS_URL = "import time; print('dashboard: http://127.0.0.1:1/', flush=True); time.sleep(30)"
EXITS = "import sys; print('boom', flush=True); sys.exit(3)"


def test_a_child_whose_command_line_is_not_readable_yet_still_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after exec the kernel may show an empty command line for a while; the start
    must not take that for "another process" and give up while the dashboard runs (seen in
    CI under load: "the dashboard did not start: (no output)", its process left running)."""
    spawned: list[int] = []
    spawn = processes.spawn

    def recording_spawn(argv: Sequence[str], log_file: Path) -> int:
        spawned.append(spawn(argv, log_file))
        return spawned[-1]

    monkeypatch.setattr(processes, "spawn", recording_spawn)
    monkeypatch.setattr(processes, "_cmdline", lambda pid: ())
    try:
        url = web.start(tmp_path, (sys.executable, "-c", PRINTS_URL), "127.0.0.1:0")
    finally:
        monkeypatch.undo()  # the real command line again, so stop() recognizes the process
        stopped = web.stop(tmp_path)
        if stopped is None:
            processes.stop(spawned)  # a failed start forgot its child: do not leave it running
    assert url == "http://127.0.0.1:1/"
    assert stopped is not None, "it was running"


def test_a_child_that_exits_is_reported_with_its_last_line(tmp_path: Path) -> None:
    with pytest.raises(web.DashboardError, match="did not start: boom"):
        web.start(tmp_path, (sys.executable, "-c", EXITS), "127.0.0.1:0")
    assert web.load(tmp_path) is None


def test_an_empty_command_line_for_a_moment_is_not_another_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """process_state with a command line: a process caught mid-exec (empty command line) is
    read again; one whose command line stays empty (a kernel thread) is another process."""
    real = processes._cmdline
    reads: list[int] = []

    def empty_at_first(pid: int) -> tuple[str, ...] | None:
        reads.append(pid)
        return () if len(reads) < 3 else real(pid)

    me = os.getpid()
    my_argv = real(me)
    assert my_argv
    monkeypatch.setattr(processes, "_cmdline", empty_at_first)
    assert processes.process_state(me, my_argv) == "alive" and len(reads) == 3
    monkeypatch.setattr(processes, "_cmdline", lambda pid: ())
    assert processes.process_state(me, my_argv) == "dead"
