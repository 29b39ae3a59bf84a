"""Every ``pbkv cluster`` command as a subprocess, against real processes.

Starting a cluster costs about a second of process start-ups, so each test drives one cluster
through a few related commands; polling between steps is done in-process (``quick_status``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from pbkv.cli.main import cli
from pbkv.runtime.admin import AdminStatus, AdminStatusReply, send_admin
from tests.cli.helpers import INTERRUPTIBLE_EXEC
from tests.cluster.helpers import (
    PING_INTERVAL,
    assert_nothing_running,
    cluster,
    node,
    ok,
    pbkv,
    pids_holding,
    quick_status,
    state_file,
    status,
    up,
    wait_for,
)

pytestmark = pytest.mark.integration


def _primary(directory: Path) -> str:
    view: dict[str, str] = quick_status(directory)["view"]
    return view["primary"]


def test_up_status_metrics_refusal_and_down(cluster_dir: Path) -> None:
    out = up(cluster_dir)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "PID", "ROLE"]
    rows = [line.split() for line in lines[1:5]]
    assert [r[0] for r in rows] == ["viewserver", "s1", "s2", "s3"]
    assert [r[3] for r in rows] == ["viewserver", "primary", "backup", "idle"]

    data = status(cluster_dir)
    assert data["view"]["primary"] == node(data, "s1")["address"]
    assert data["view"]["backup"] == node(data, "s2")["address"]
    assert data["view"]["acknowledged"] is True
    assert data["failovers"] == 0
    assert re.fullmatch("[0-9a-f]{16}", data["cluster"])  # the view service's cluster id (V16)
    assert [n["role"] for n in data["nodes"]] == ["viewserver", "primary", "backup", "idle"]
    for entry in data["nodes"]:
        assert entry["state"] == "alive" and entry["health"] == ""
        assert {"name", "address", "pid", "role", "state", "metrics_port"} <= set(entry)

    table = cluster(cluster_dir, "status")
    assert table.splitlines()[0].startswith(f"view {data['view']['number']}: primary=")
    assert table.splitlines()[0].endswith(f"failovers so far: 0; cluster {data['cluster']}")
    assert table.splitlines()[1].split()[:5] == ["NAME", "ADDRESS", "PID", "STATE", "ROLE"]
    assert "\x1b[" not in table  # not a terminal: plain text

    recorded = state_file(cluster_dir)["processes"]
    assert [p["name"] for p in recorded] == ["viewserver", "s1", "s2", "s3"]
    for process in recorded:
        assert {"role_at_start", "admin_port", "log_file", "argv"} <= set(process)
        assert Path(process["log_file"]).is_file()
        assert node(data, process["name"])["metrics_port"] == process["metrics_port"]
        url = f"http://127.0.0.1:{process['metrics_port']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        assert "# TYPE" in body and "pbkv" in body, body[:200]

    refused = pbkv("cluster", "up", "--dir", str(cluster_dir), "--base-port", "0")
    assert refused.returncode == 4 and "already running" in refused.stderr
    assert quick_status(cluster_dir)["view"]["acknowledged"]

    assert len(pids_holding(cluster_dir)) == 4
    out = cluster(cluster_dir, "down")
    assert out.startswith("stopped: viewserver")
    assert_nothing_running(cluster_dir)
    assert not (cluster_dir / "cluster.json").exists()
    assert (cluster_dir / "logs" / "s1.log").stat().st_size > 0
    again = pbkv("cluster", "status", "--dir", str(cluster_dir))
    assert again.returncode == 4 and "no cluster" in again.stderr
    after = cluster(cluster_dir, "logs", "viewserver", "--event", "view_change")
    assert len(after.splitlines()) == 2  # the logs outlive the cluster


def test_up_refuses_a_taken_port_and_starts_nothing(cluster_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = pbkv("cluster", "up", "--dir", str(cluster_dir), "--base-port", str(port))
    assert result.returncode == 4  # refused
    assert f"port {port}" in result.stderr and "already in use" in result.stderr
    assert not (cluster_dir / "cluster.json").exists()
    assert_nothing_running(cluster_dir)


def test_a_failed_up_stops_what_it_started(cluster_dir: Path) -> None:
    result = pbkv(
        "cluster", "up", "--dir", str(cluster_dir), "--base-port", "0", "--timeout", "0.3"
    )
    assert result.returncode == 5, result.stdout  # failed
    assert "in time" in result.stderr or "exited" in result.stderr
    assert not (cluster_dir / "cluster.json").exists()
    assert_nothing_running(cluster_dir)


def test_kill_primary_failover_restart_and_the_merged_json_logs(cluster_dir: Path) -> None:
    running = cluster_dir
    up(running, "--log-format", "json")
    assert (running / "logs" / "s1.log").read_text().startswith('{"ts":')
    before = quick_status(running)
    s1 = node(before, "s1")
    out = cluster(running, "kill", "primary")
    assert f"to s1 {s1['address']} (pid {s1['pid']}): now dead" in out
    wait_for(lambda: _primary(running) == node(before, "s2")["address"], what="s2 promoted")
    wait_for(lambda: quick_status(running)["view"]["acknowledged"], what="s3 synced")
    data = status(running)
    assert node(data, "s1")["state"] == "dead"
    assert data["failovers"] == 1

    out = cluster(running, "restart", "s1")
    assert f"restarted s1 {s1['address']}" in out
    data = status(running)
    assert node(data, "s1")["state"] == "alive"
    assert node(data, "s1")["pid"] != s1["pid"]
    assert node(data, "s1")["role"] == "idle"
    assert state_file(running)["processes"][1]["restarts"] == 1

    lines = cluster(running, "logs").splitlines()
    stamps = [line.split()[0] for line in lines]
    assert stamps == sorted(stamps)
    assert {"viewserver", "s1", "s2", "s3"} <= {line.split()[1] for line in lines}
    changes = cluster(running, "logs", "viewserver", "--event", "view_change").splitlines()
    assert len(changes) == 3, changes
    assert all(" viewserver view=" in c and " view_change " in c for c in changes)
    records = [json.loads(line) for line in cluster(running, "logs", "s2", "--json").splitlines()]
    assert records and {r["source"] for r in records} == {"s2"}
    assert any(r["event"] == "role_change" and r["fields"]["role"] == "primary" for r in records)

    # The cluster's view service keeps its view in the cluster directory: a restart resumes it
    # instead of handing view 1 to the first server that pings (issue #8, finding 3).
    number = quick_status(running)["view"]["number"]
    cluster(running, "restart", "viewserver")

    def resumed() -> bool:
        view = quick_status(running).get("view") or {}
        return bool(view.get("number", 0) >= number)

    wait_for(resumed, what="the view resumed")
    assert '"event":"view_restored"' in (running / "logs" / "viewserver.log").read_text()


def test_stop_resume_term_add_and_unknown_targets(running: Path) -> None:
    out = cluster(running, "kill", "backup", "--signal", "STOP")
    assert "SIGSTOP to s2" in out and "now paused" in out
    assert node(status(running), "s2")["state"] == "paused"
    silent = pbkv("cluster", "unreliable", "s2", "--drop", "0.1", "--dir", str(running))
    assert silent.returncode == 3, silent.stderr  # unavailable, not refused (re-review)
    assert "s2 did not answer (paused)" in silent.stderr
    out = cluster(running, "resume", "s2")
    assert "SIGCONT to s2" in out
    assert node(quick_status(running), "s2")["state"] == "alive"

    assert "now dead" in cluster(running, "kill", "s3", "--signal", "TERM")
    again = pbkv("cluster", "kill", "s3", "--dir", str(running))
    assert again.returncode == 4 and "not running" in again.stderr
    unknown = pbkv("cluster", "kill", "s9", "--dir", str(running))
    assert unknown.returncode == 4 and "unknown target 's9'" in unknown.stderr

    out = cluster(running, "add")
    assert out.splitlines()[1].split()[0] == "s4"
    data = quick_status(running)
    assert node(data, "s4")["state"] == "alive"
    assert node(data, "s4")["role"] == "idle"
    assert len(state_file(running)["processes"]) == 5


def test_partition_replaces_the_cut_primary_which_refuses_and_heal_rejoins(
    running: Path,
) -> None:
    old = node(quick_status(running), "s1")
    out = cluster(running, "partition", "primary", "viewserver")
    assert out.startswith(f"cut: s1 (primary, {old['address']}) and viewserver (")
    assert "\nexpect: the view service stops hearing s1" in out
    wait_for(lambda: _primary(running) != old["address"], what="a new primary")
    wait_for(lambda: quick_status(running)["view"]["acknowledged"], what="the new view acked")
    probe = pbkv("cluster", "probe", "s1", "k", "--dir", str(running))
    answer = probe.stdout.strip()
    if probe.returncode == 3:
        assert answer == f"s1 {old['address']}: no answer"
    else:  # refused, saying why: a non-zero exit for scripts
        assert probe.returncode == 4
        said = f"wrong_server: {old['address']} is primary (stalled) in view"
        assert answer.startswith(f"s1 {old['address']}: {said}")
        assert "refused its forward" in answer
    assert node(quick_status(running), "s1")["own_role"] == "primary"  # it still believes it

    cluster(running, "heal")
    new_view = quick_status(running)["view"]["number"]
    wait_for(lambda: node(quick_status(running), "s1")["own_view"] == new_view, what="rejoin")
    assert node(quick_status(running), "s1")["own_role"] == "idle"


def test_one_way_partition_isolate_and_unreliable(running: Path) -> None:
    out = cluster(running, "partition", "s2", "s3", "--one-way")
    assert out.startswith("cut: what s2 (") and " sends to s3 (" in out
    out = cluster(running, "isolate", "backup")
    assert out.startswith("cut: s2 (backup, ") and "no longer hears viewserver, s1, s3" in out
    backup = node(quick_status(running), "s2")["address"]
    wait_for(lambda: quick_status(running)["view"]["backup"] != backup, what="backup replaced")
    cluster(running, "heal")

    out = cluster(running, "unreliable", "primary", "--drop", "0.1", "--delay-ms", "5")
    assert out.strip() == "s1: drop 0.1, delay up to 5 ms"
    admin = f"127.0.0.1:{state_file(running)['processes'][1]['admin_port']}"
    reply = send_admin(admin, AdminStatus())
    assert isinstance(reply, AdminStatusReply)
    assert reply.faults.drop == pytest.approx(0.1)
    assert reply.faults.delay_ms == pytest.approx(5.0)
    viewserver = state_file(running)["viewserver"]
    secret = ("--auth-token-file", str(running / "auth-token"))  # an address alone: no secret
    ok(pbkv(*secret, "put", "k", "v", "--viewserver", viewserver, "--timeout", "20"))
    got = ok(pbkv(*secret, "get", "k", "--viewserver", viewserver, "--timeout", "20"))
    assert got.strip() == "v"
    cluster(running, "heal")
    healed = send_admin(admin, AdminStatus())
    assert isinstance(healed, AdminStatusReply)
    assert healed.faults.drop == 0.0
    bad = pbkv("cluster", "unreliable", "s1", "--drop", "2", "--dir", str(running))
    assert bad.returncode == 2
    in_memory = pbkv("cluster", "slow-disk", "s1", "--ms", "100", "--dir", str(running))
    assert in_memory.returncode == 4, in_memory.stderr
    assert in_memory.stderr.strip().endswith(
        "no data directory: this process keeps nothing on disk"
    )
    not_a_server = pbkv("cluster", "slow-disk", "viewserver", "--ms", "1", "--dir", str(running))
    assert not_a_server.returncode == 4
    assert "only a server has a data directory" in not_a_server.stderr
    assert "Traceback" not in in_memory.stderr + not_a_server.stderr


def _popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE_EXEC, sys.executable, "-m", "pbkv", "cluster", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_logs_follow_and_status_watch_run_until_interrupted(running: Path) -> None:
    follower = _popen("logs", "--follow", "--dir", str(running))
    watcher = _popen("status", "--watch", "--interval", "0.2", "--dir", str(running))
    try:
        time.sleep(1.5)
        cluster(running, "kill", "backup")
        assert follower.stdout is not None
        deadline = time.monotonic() + 15
        seen = ""
        while "server_declared_dead" not in seen and time.monotonic() < deadline:
            seen += follower.stdout.readline()
        assert "server_declared_dead" in seen
        # The watcher redraws every 0.2 s: give it five turns to show the death (interrupted
        # at once, it once exited with its last frame drawn just before, on a loaded machine).
        time.sleep(1.0)
    finally:
        for process in (follower, watcher):
            process.send_signal(signal.SIGINT)
    out, _ = watcher.communicate(timeout=10)
    follower.communicate(timeout=10)
    assert out.count("NAME ") >= 2
    assert "dead" in out


def test_up_with_one_server_and_fixed_ports(cluster_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = 20000 + probe.getsockname()[1] % 10000  # below the ephemeral range
    result = pbkv(
        "cluster",
        "up",
        "--dir",
        str(cluster_dir),
        "--servers",
        "1",
        "--base-port",
        str(base),
        "--ping-interval",
        PING_INTERVAL,
    )
    if result.returncode == 4 and "already in use" in result.stderr:
        pytest.skip("port range taken by another process")
    ok(result)
    data = state_file(cluster_dir)
    assert data["viewserver"] == f"127.0.0.1:{base}"
    assert data["processes"][1]["address"] == f"127.0.0.1:{base + 1}"
    assert data["processes"][1]["admin_port"] == base + 101
    assert data["processes"][1]["metrics_port"] == base + 201
    assert f"export PBKV_VIEWSERVER=127.0.0.1:{base}" in result.stdout
    assert quick_status(cluster_dir)["view"]["backup"] is None


COMMANDS = [
    "up",
    "down",
    "status",
    "kill",
    "resume",
    "restart",
    "add",
    "logs",
    "partition",
    "isolate",
    "heal",
    "unreliable",
    "probe",
]


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    for command in COMMANDS:
        result = runner.invoke(cli, ["cluster", command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example" in result.output and f"pbkv cluster {command}" in result.output, command
    assert ok(pbkv("cluster", "--help")).count("pbkv cluster") >= 4


def test_restart_of_the_last_server_holding_the_data_needs_force(cluster_dir: Path) -> None:
    up(cluster_dir, "--servers", "2")
    backup = node(quick_status(cluster_dir), "s2")["address"]
    assert cluster(cluster_dir, "restart", "backup").startswith("restarted s2")  # s1 holds it
    wait_for(lambda: quick_status(cluster_dir)["view"]["acknowledged"], what="s2 synced again")
    cluster(cluster_dir, "kill", "s2")
    wait_for(lambda: quick_status(cluster_dir)["view"]["backup"] != backup, what="s2 dropped")
    refused = pbkv("cluster", "restart", "s1", "--dir", str(cluster_dir))
    assert refused.returncode == 4, refused.stderr
    assert "last server holding the data" in refused.stderr and "--force" in refused.stderr
    assert node(quick_status(cluster_dir), "s1")["restarts"] == 0
    assert cluster(cluster_dir, "restart", "s1", "--force").startswith("restarted s1")


def test_client_commands_take_the_cluster_names_inside_a_cluster_directory(running: Path) -> None:
    env = {**os.environ, "PBKV_CLUSTER_DIR": str(running)}
    env.pop("PBKV_VIEWSERVER", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pbkv", *args],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip

    assert run("put", "named", "yes").returncode == 0  # the cluster's view service by default
    dumped = run("dump", "--server", "backup", "--json")
    assert dumped.returncode == 0, dumped.stderr
    record = json.loads(dumped.stdout)
    assert record["role"] == "backup" and record["keys"] == {"named": "yes"}
    assert json.loads(run("dump", "--server", "s1", "--json").stdout)["role"] == "primary"
    unknown = run("dump", "--server", "s9")
    assert unknown.returncode == 2 and "neither HOST:PORT nor a cluster name" in unknown.stderr


def test_status_watch_redraws_in_place_on_a_terminal(running: Path) -> None:
    import pty

    command = [sys.executable, "-m", "pbkv", "cluster", "status", "--dir", str(running)]
    wrapper = [sys.executable, "-c", INTERRUPTIBLE_EXEC, *command, "--watch", "--interval", "0.2"]
    controller, terminal = pty.openpty()
    child = subprocess.Popen(wrapper, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 20.0
    try:
        while output.count(b"NAME") < 3 and time.monotonic() < deadline:
            try:
                output += os.read(controller, 65536)
            except OSError:
                break
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(timeout=20)
        os.close(controller)
    assert output.count(b"NAME") >= 3, output[-500:]  # redrawn at least three times
    assert b"\x1b[2J" not in output  # never clears the screen (no flicker)
    assert b"\x1b[1A" in output or b"\x1b[2K" in output  # moves up and rewrites instead


def test_bench_on_a_cluster_directory_with_generator_processes(running: Path) -> None:
    """The secret of ``--cluster-dir`` reaches the spawned generators of ``--procs 2``: they
    once ran with none, were refused, and a 0-ops run reported only retries."""
    env = {k: v for k, v in os.environ.items() if k != "PBKV_AUTH_TOKEN"}
    arguments = ["bench", "--cluster-dir", str(running), "--procs", "2", "--clients", "4"]
    result = subprocess.run(
        [sys.executable, "-m", "pbkv", *arguments, "--duration", "0.5", "--json"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    document = json.loads(ok(result))
    assert document["ops"] > 0 and document["errors"] == 0, document
