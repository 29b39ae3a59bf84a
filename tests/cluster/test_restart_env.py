"""``cluster restart`` keeps the ``PBKV_<COMMAND>_*`` settings a process was first started with
(re-review: a server restarted from a shell without ``PBKV_SERVER_VALUE_BYTES_MAX`` ran with
other limits than its peers, and a value acknowledged under the larger limit was lost)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.helpers import PING_INTERVAL, state_file

pytestmark = pytest.mark.integration


def cluster_command(directory: Path, *args: str, **env: str) -> None:
    command = [sys.executable, "-m", "pbkv", "cluster", *args, "--dir", str(directory)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("PBKV_SERVER_")}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**base, **env}, check=False
    )
    assert result.returncode == 0, result.stderr


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_a_restarted_server_keeps_the_settings_it_was_started_with(cluster_dir: Path) -> None:
    up = ("up", "--base-port", "0", "--ping-interval", PING_INTERVAL)
    cluster_command(cluster_dir, *up, PBKV_SERVER_VALUE_BYTES_MAX="2000000")
    [s1] = [p for p in state_file(cluster_dir)["processes"] if p["name"] == "s1"]
    assert ["PBKV_SERVER_VALUE_BYTES_MAX", "2000000"] in s1["env"]
    cluster_command(cluster_dir, "restart", "s1")  # from a shell without the setting
    [s1] = [p for p in state_file(cluster_dir)["processes"] if p["name"] == "s1"]
    assert environment_of(s1["pid"])["PBKV_SERVER_VALUE_BYTES_MAX"] == "2000000"
