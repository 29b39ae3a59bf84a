"""``pbkv cluster up --forget-after-s``: the view service of a local cluster drops a dead spare
from its table after that long instead of its 60 s default (docs/guide.md §12b).

The option reaches every view service's command line (all three with ``--etcd``), is recorded
in the state file (a file written before it existed loads with None: the default), and a value
the view service would refuse at start is refused by ``up`` itself, before anything starts.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pbkv.cli.exits import EXIT_USAGE
from pbkv.cli.node_commands import viewserver
from pbkv.cluster import etcd, manager
from pbkv.cluster.state import load_state, save_state, state_path
from pbkv.runtime.config import ConfigError
from tests.cluster.helpers import (
    cluster,
    node,
    pbkv,
    quick_status,
    state_file,
    status,
    up,
    wait_for,
)

FLAG = "--forget-after-s"
FORGET_AFTER_S = 1.0
"""The shortest the view service takes at 0.05 s pings: 4 dead intervals of 5 pings."""


def _flag_value(argv: tuple[str, ...]) -> str | None:
    return argv[argv.index(FLAG) + 1] if FLAG in argv else None


def _parsed_forget_after(argv: tuple[str, ...]) -> object:
    """What ``pbkv viewserver`` makes of ``argv`` (its own parser, nothing started)."""
    args = list(argv[argv.index("viewserver") + 1 :])
    with viewserver.make_context("viewserver", args) as context:
        return context.params["forget_after_s"]


def test_the_view_service_command_line_carries_the_option_and_only_when_given(
    tmp_path: Path,
) -> None:
    state, plans = manager._plan(manager.ClusterConfig(tmp_path, forget_after_s=2.5))
    assert state.forget_after_s == 2.5
    [service] = [p for p in plans if p.kind == "viewserver"]
    assert _flag_value(service.argv) == "2.5"
    assert _parsed_forget_after(service.argv) == 2.5
    assert all(FLAG not in p.argv for p in plans if p.kind == "server")
    _, plans = manager._plan(manager.ClusterConfig(tmp_path))
    assert all(FLAG not in p.argv for p in plans)  # not given: the view service's default
    assert _parsed_forget_after(plans[0].argv) is None


def test_every_view_service_on_etcd_gets_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(etcd, "etcd_binary", lambda: "etcd")  # planned, never started
    config = manager.ClusterConfig(tmp_path, base_port=0, etcd=True, forget_after_s=3.0)
    _, plans = manager._plan(config)
    services = [p for p in plans if p.kind == "viewserver"]
    assert len(services) == manager.ETCD_VIEWSERVERS
    assert [_flag_value(p.argv) for p in services] == ["3.0"] * manager.ETCD_VIEWSERVERS


def test_the_state_file_keeps_the_option_and_loads_one_written_without_it(
    tmp_path: Path,
) -> None:
    state, plans = manager._plan(manager.ClusterConfig(tmp_path, forget_after_s=1.25))
    state = replace(state, processes=tuple(plans))
    save_state(state)
    assert load_state(tmp_path) == state
    assert load_state(tmp_path).forget_after_s == 1.25
    old = json.loads(state_path(tmp_path).read_text())
    del old["forget_after_s"]  # as a pbkv before the option wrote it
    state_path(tmp_path).write_text(json.dumps(old))
    assert load_state(tmp_path).forget_after_s is None


def test_the_manager_refuses_what_the_view_service_would_before_anything_starts(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "cluster"
    config = manager.ClusterConfig(directory, ping_interval_s=0.05, forget_after_s=0.99)
    with pytest.raises(ConfigError, match="at least 4 dead intervals"):
        manager.up(config)
    assert not directory.exists()
    manager.check_forget_after(0.05, 5, FORGET_AFTER_S)  # 4 x 5 x 0.05 s: the shortest


@pytest.mark.integration
def test_up_refuses_a_value_the_view_service_would_in_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    for extra in (("--forget-after-s", "0.99"), ("--dead-pings", "10", "--forget-after-s", "1.5")):
        result = pbkv("cluster", "up", "--dir", str(directory), "--ping-interval", "0.05", *extra)
        assert result.returncode == EXIT_USAGE, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert "--forget-after-s must be finite and at least 4 dead intervals" in line, line
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert not directory.exists()  # nothing started, nothing written
    result = pbkv("cluster", "up", "--dir", str(directory), "--resume", FLAG, "5")
    assert result.returncode == EXIT_USAGE, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "it takes no --forget-after-s" in line, line


@pytest.mark.integration
def test_a_killed_spare_leaves_the_view_services_table_after_forget_after_s(
    cluster_dir: Path,
) -> None:
    up(cluster_dir, "--servers", "3", FLAG, f"{FORGET_AFTER_S:g}")  # pings every 0.05 s
    assert state_file(cluster_dir)["forget_after_s"] == FORGET_AFTER_S
    spare = load_state(cluster_dir).find("s3")
    assert spare is not None and node(quick_status(cluster_dir), "s3")["role"] == "idle"
    cluster(cluster_dir, "kill", "s3")
    wait_for(  # with the 60 s default it would stay listed far beyond this wait
        lambda: node(quick_status(cluster_dir), "s3")["last_ping_age_s"] is None,
        timeout=FORGET_AFTER_S + 4.0,
        what="the view service to forget s3",
    )
    seen = status(cluster_dir)  # the command itself: s3 left the view service's table
    assert [node(seen, "s3")[k] for k in ("state", "role", "last_ping_age_s")] == [
        "dead",
        "-",
        None,
    ]
    assert node(seen, "s2")["last_ping_age_s"] is not None  # the live ones stay
    log = Path(load_state(cluster_dir).viewservers()[0].log_file).read_text()
    [forgotten] = [line for line in log.splitlines() if "server_forgotten" in line]
    assert f"server={spare.address}" in forgotten
    cluster(cluster_dir, "restart", "viewserver")
    service = load_state(cluster_dir).viewservers()[0]
    cmdline = Path(f"/proc/{service.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[cmdline.index(FLAG.encode()) + 1] == b"1.0"  # restart keeps it
