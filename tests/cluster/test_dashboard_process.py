"""The dashboard process of ``pbkv cluster up --dashboard`` (``pbkv.cluster.web``), started for
real with a stand-in command that prints the URL line as ``pbkv dashboard`` does."""

from __future__ import annotations

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
