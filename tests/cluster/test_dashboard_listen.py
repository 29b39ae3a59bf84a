"""``pbkv cluster up --dashboard`` checks the dashboard's address before it starts anything, and
a dashboard that fails anyway takes the cluster down with it (review: a busy or garbage
``--dashboard-listen`` exited 5 and left the whole cluster running, although ``--help`` says
that on failure everything it started is stopped again)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import NoReturn

import pytest
from click.testing import CliRunner

from pbkv.cli import cluster_commands
from pbkv.cluster import web
from tests.cluster.helpers import PING_INTERVAL, assert_nothing_running, pbkv

pytestmark = pytest.mark.integration


def up_with_dashboard(directory: Path, listen: str) -> tuple[int, str]:
    result = pbkv(
        "cluster", "up", "--dir", str(directory), "--base-port", "0",
        "--dashboard", "--dashboard-listen", listen,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbkv: error: "), result.stderr
    return result.returncode, lines[0]


def test_an_address_that_is_not_host_port_starts_nothing(cluster_dir: Path) -> None:
    code, line = up_with_dashboard(cluster_dir, "garbage")
    assert code == 2 and "--dashboard-listen" in line
    assert not (cluster_dir / "cluster.json").exists()
    assert_nothing_running(cluster_dir)


def test_a_busy_port_starts_nothing(cluster_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        listen = f"127.0.0.1:{busy.getsockname()[1]}"
        code, line = up_with_dashboard(cluster_dir, listen)
    assert code == 4  # refused, as a taken port of the cluster is
    assert f"the dashboard cannot listen on {listen}" in line
    assert not (cluster_dir / "cluster.json").exists()
    assert_nothing_running(cluster_dir)


def _fails(*args: object) -> NoReturn:
    raise web.DashboardError("the dashboard did not start: boom")


def test_a_dashboard_that_fails_after_the_start_stops_the_cluster(
    cluster_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "start", _fails)
    args = ["up", "--dir", str(cluster_dir), "--base-port", "0", "--servers", "2"]
    args += ["--ping-interval", PING_INTERVAL, "--dashboard", "--dashboard-listen", "127.0.0.1:0"]
    result = CliRunner().invoke(cluster_commands.cluster, args)
    assert isinstance(result.exception, web.DashboardError), result.output
    assert "the cluster was stopped again" in str(result.exception)
    assert not (cluster_dir / "cluster.json").exists()
    assert_nothing_running(cluster_dir)
