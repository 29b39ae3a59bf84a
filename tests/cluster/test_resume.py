"""``pbkv cluster up --resume``: the ``down`` of a durable cluster keeps its record
(``cluster.stopped.json``) and its data, and ``up --resume`` starts the same processes again on
them, every key there (before, no cluster command could: ``up`` refused the data, ``--fresh``
deleted it, and the operator started servers by hand). A cluster whose processes all died (a
reboot) resumes the same way. Refusals are one line and never delete anything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import pbkv
from pbkv.cluster.state import (
    ClusterState,
    ProcessRecord,
    keep_stopped,
    load_stopped,
    save_state,
    state_path,
)
from tests.cluster.helpers import PING_INTERVAL, cluster, state_file, up
from tests.cluster.helpers import pbkv as run_pbkv

pytestmark = pytest.mark.integration

STOPPED = "cluster.stopped.json"
SETTING = "PBKV_SERVER_VALUE_BYTES_MAX"


def data_files(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (directory / "data").rglob("*") if p.is_file()}


def up_with_setting(directory: Path) -> None:
    """``up --durable`` with a ``PBKV_SERVER_*`` setting in its environment (and only there)."""
    command = [sys.executable, "-m", "pbkv", "cluster", "up", "--dir", str(directory)]
    command += ["--base-port", "0", "--ping-interval", PING_INTERVAL, "--durable"]
    command += ["--servers", "2"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("PBKV_SERVER_")}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**base, SETTING: "2000000"},
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def refused(directory: Path, *args: str, code: int = 4) -> str:
    """``pbkv cluster ARGS --dir DIRECTORY`` must fail with ``code`` and one line; returns it."""
    result = run_pbkv("cluster", *args, "--dir", str(directory))
    assert result.returncode == code, (result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert "Traceback" not in line
    return line


def started_as(directory: Path) -> list[tuple[str, str, list[str], list[list[str]]]]:
    return [
        (p["name"], p["address"], p["argv"], p["env"]) for p in state_file(directory)["processes"]
    ]


def kv(directory: Path) -> pbkv.Client:
    token = (directory / "auth-token").read_text().strip()
    return pbkv.Client(state_file(directory)["viewserver"], timeout=20, token=token)


def test_up_resume_brings_a_stopped_durable_cluster_back_with_every_key(
    cluster_dir: Path,
) -> None:
    up_with_setting(cluster_dir)
    before = started_as(cluster_dir)
    written = {f"k{i}": f"v{i}" for i in range(20)}
    with kv(cluster_dir) as client:
        for key, value in written.items():
            client.put(key, value)
    out = cluster(cluster_dir, "down")
    assert f"`pbkv cluster up --resume --dir {cluster_dir}`" in out
    assert (cluster_dir / STOPPED).exists() and not (cluster_dir / "cluster.json").exists()
    kept = data_files(cluster_dir)
    assert "--resume" in refused(cluster_dir, "up", "--base-port", "0")
    port = int(before[2][1].rsplit(":", 1)[1])  # s2's
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # s2's closed sockets
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        assert f"port {port} (of s2) is already in use" in refused(cluster_dir, "up", "--resume")
    assert data_files(cluster_dir) == kept and (cluster_dir / STOPPED).exists()

    out = cluster(cluster_dir, "up", "--resume")  # from a shell without the setting

    assert "primary" in out and "backup" in out and "cluster up in" in out
    assert started_as(cluster_dir) == before  # the same processes, ports, argv and settings
    assert not (cluster_dir / STOPPED).exists()
    s1 = state_file(cluster_dir)["processes"][1]
    environment = Path(f"/proc/{s1['pid']}/environ").read_bytes().split(b"\0")
    assert f"{SETTING}=2000000".encode() in environment
    with kv(cluster_dir) as client:
        assert {key: client.get(key) for key in written} == written
        client.put("after", "resume")
        assert client.get("after") == "resume"


def test_a_durable_cluster_whose_processes_all_died_resumes(cluster_dir: Path) -> None:
    """A reboot or a power cut leaves the state file with dead pids: that is a stopped cluster
    too."""
    up(cluster_dir, "--durable", "--servers", "2")
    with kv(cluster_dir) as client:
        client.put("survivor", "on disk")
    for process in state_file(cluster_dir)["processes"]:
        os.kill(process["pid"], signal.SIGKILL)

    cluster(cluster_dir, "up", "--resume")

    with kv(cluster_dir) as client:
        assert client.get("survivor") == "on disk"


def test_up_resume_refusals_are_one_line(cluster_dir: Path) -> None:
    nothing = refused(cluster_dir, "up", "--resume")
    assert f"no stopped durable cluster in {cluster_dir}" in nothing
    conflict = refused(cluster_dir, "up", "--resume", "--servers", "2", "--fresh", code=2)
    assert "it takes no --servers, --fresh" in conflict
    up(cluster_dir, "--servers", "1")
    assert "already running" in refused(cluster_dir, "up", "--resume")
    out = cluster(cluster_dir, "down")
    assert "--resume" not in out  # a cluster in memory keeps nothing to resume
    assert "no stopped durable cluster" in refused(cluster_dir, "up", "--resume")


def recorded(directory: Path, *names: str) -> ClusterState:
    """A durable cluster state naming ``names`` (no process runs)."""
    processes = tuple(
        ProcessRecord(name, "server", "idle", f"127.0.0.1:{port}", 0, 0, 0, "log", (), 0.0)
        for port, name in enumerate(names, start=20000)
    )
    return ClusterState(directory, "127.0.0.1:1", 0.05, 5, 0, 0.0, processes, fsync="always")


def test_down_keeps_the_complete_record_after_an_interrupted_resume(tmp_path: Path) -> None:
    """A resume killed half-way leaves a state file naming only what it had started: the
    stopped record it started from stays. A state file naming every stopped process (``add``
    after a resume) replaces it."""
    save_state(recorded(tmp_path, "viewserver", "s1"))
    (tmp_path / STOPPED).write_text(state_path(tmp_path).read_text().replace('"s1"', '"s9"'))
    keep_stopped(tmp_path)
    assert [p.name for p in load_stopped(tmp_path).processes] == ["viewserver", "s9"]
    assert not state_path(tmp_path).exists()
    save_state(recorded(tmp_path, "viewserver", "s9", "s10"))
    keep_stopped(tmp_path)
    assert [p.name for p in load_stopped(tmp_path).processes] == ["viewserver", "s9", "s10"]
