"""The dashboard's restart and resume buttons name the process the matching ``pbkv cluster``
command names: on a view service replicated on etcd, ``viewserver`` is a stopped member, never
the one still serving (which restarting would stop). Without processes: process states and
the manager's actions are stand-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbkv.dashboard import actions
from tests.cluster.inprocess import record_replicated_view_service, stub_process_actions


@pytest.fixture
def acted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    record_replicated_view_service(tmp_path, 92_000)
    states = {92_001: "alive", 92_002: "dead", 92_003: "paused"}
    return stub_process_actions(
        monkeypatch, states, 92_009, label=lambda action, name: f"{action} {name}"
    )


def test_restart_viewserver_names_the_dead_member(tmp_path: Path, acted: list[str]) -> None:
    assert actions.run(tmp_path, "restart", "viewserver") == "restarted viewserver2 (pid 92009)"
    assert acted == ["restart viewserver2"]


def test_resume_viewserver_names_the_paused_member(tmp_path: Path, acted: list[str]) -> None:
    assert actions.run(tmp_path, "resume", "vs") == "resumed viewserver3"
    assert acted == ["resume viewserver3"]
