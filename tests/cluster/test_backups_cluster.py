"""K = 2 against real processes (issue 11): ``pbkv cluster up --servers 4 --backups 2``, then the
primary and one backup are killed at once (SIGKILL): the surviving backup takes over and every
acknowledged write is still there."""

from __future__ import annotations

from pathlib import Path

import pytest

import pbkv
from tests.cluster.helpers import (
    cluster,
    node,
    quick_status,
    state_file,
    up,
    wait_for,
)
from tests.cluster.helpers import (
    pbkv as run_pbkv,
)

pytestmark = pytest.mark.integration


def test_two_backups_survive_the_primary_and_a_backup_killed_at_once(cluster_dir: Path) -> None:
    out = up(cluster_dir, "--servers", "4", "--backups", "2")
    roles = [line.split()[3] for line in out.splitlines()[1:6]]
    assert roles == ["viewserver", "primary", "backup", "backup", "idle"]
    data = quick_status(cluster_dir)
    s1, s2, s3 = (node(data, name)["address"] for name in ("s1", "s2", "s3"))
    assert data["view"]["backups"] == [s2, s3]
    assert "backup=" + ",".join([s2, s3]) in cluster(cluster_dir, "status")
    token = (cluster_dir / "auth-token").read_text().strip()
    written = {f"k{i}": f"v{i}" for i in range(50)}
    with pbkv.Client(state_file(cluster_dir)["viewserver"], timeout=20, token=token) as kv:
        for key, value in written.items():
            kv.put(key, value)
        cluster(cluster_dir, "kill", "s1")
        cluster(cluster_dir, "kill", "s2")
        view = wait_for(
            lambda: (v := quick_status(cluster_dir)["view"]) and v["primary"] == s3 and v,
            timeout=30,
            what="s3 promoted",
        )
        assert s1 not in view["backups"] and s2 not in view["backups"]
        assert {key: kv.get(key) for key in written} == written


def test_backups_out_of_range_is_one_line_and_exit_2(cluster_dir: Path) -> None:
    result = run_pbkv("viewserver", "--listen", "127.0.0.1:0", "--backups", "9")
    assert result.returncode == 2
    assert "--backups" in result.stderr and "Traceback" not in result.stderr
