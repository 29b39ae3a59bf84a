"""The ``pbkv`` client commands as a user runs them, against a real cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import Cluster, free_port

pytestmark = pytest.mark.integration


def pbkv(
    *args: str, viewserver: str | None = None, stdin: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PBKV_VIEWSERVER", None)
    if viewserver is not None:
        env["PBKV_VIEWSERVER"] = viewserver
    return subprocess.run(
        [sys.executable, "-m", "pbkv", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=timeout,
        check=False,
    )


def test_put_append_get_delete_from_the_command_line(shared_cluster: Cluster) -> None:
    address = shared_cluster.address
    assert pbkv("put", "greeting", "hello", "--viewserver", address).returncode == 0
    assert pbkv("append", "greeting", " world", viewserver=address).returncode == 0  # $PBKV_...
    got = pbkv("get", "greeting", "--viewserver", address, "--timeout", "10")
    assert (got.returncode, got.stdout, got.stderr) == (0, "hello world\n", "")
    assert pbkv("delete", "greeting", viewserver=address).returncode == 0
    missing = pbkv("get", "greeting", viewserver=address)
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", "not found\n")


def test_status_and_dump_show_the_view_and_the_replicated_store(cluster: Cluster) -> None:
    address = cluster.address
    kv = cluster.client()
    for i in range(5):
        kv.put(f"k{i}", f"v{i}")
    status = json.loads(pbkv("status", "--json", viewserver=address).stdout)
    primary, backup = cluster.servers[0].name, cluster.servers[1].name
    number = status["view"]["number"]  # 2, or later if load made the backup drop and rejoin
    assert number >= 2
    assert status["view"] == {
        "number": number,
        "primary": primary,
        "backup": backup,
        "backups": [backup],
        "note": "",  # words only before view 1 (a19601e)
    }
    assert status["acknowledged"] is True
    assert [(s["name"], s["role"], s["alive"]) for s in status["servers"]] == [
        (primary, "primary", True),
        (backup, "backup", True),
    ]
    assert all(0 <= s["last_ping_age_s"] < 1.0 for s in status["servers"])
    text = pbkv("status", viewserver=address).stdout
    view_line = f"view {number}  primary {primary}  backup {backup}  acknowledged yes  cluster "
    assert text.startswith(view_line)
    assert re.match(r"[0-9a-f]{16}\n", text[len(view_line) :]), text
    assert status["cluster"] == text[len(view_line) :][:16]
    assert f"{backup}  backup   yes" in text
    # SERVER as an argument (like `pbkv cluster probe s1`) or as --server: the same
    dumps = [
        json.loads(pbkv("dump", *s, "--json").stdout) for s in ([primary], ["--server", backup])
    ]
    assert dumps[0]["keys"] == dumps[1]["keys"] == {f"k{i}": f"v{i}" for i in range(5)}
    assert (dumps[0]["role"], dumps[1]["role"]) == ("primary", "backup")
    assert dumps[1]["view"]["number"] == number and dumps[1]["synced"] is True
    plain = pbkv("dump", backup).stdout.splitlines()
    assert plain[0].startswith(f"{backup}  role backup") and "k3\tv3" in plain
    for words, said in (((), "which server?"), ((primary, "--server", backup), "server once")):
        refused = pbkv("dump", *words)
        assert (refused.returncode, refused.stdout) == (2, "") and said in refused.stderr


def test_shell_takes_commands_in_any_case_and_survives_bad_lines(shared_cluster: Cluster) -> None:
    script = "\n".join(
        [
            "SET a 1",
            "put b 'two words'",
            "Append a 2",
            "GET a",
            "get b",
            "frobnicate x",
            "GET",
            "del a",
            "GET a",
            "status",
            "HELP",
            "QUIT",
            "GET b",
        ]
    )
    result = pbkv("shell", "--viewserver", shared_cluster.address, stdin=script + "\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:7] == ["OK", "OK", "OK", "12", "two words", "OK", "(nil)"]
    assert re.match(r"view \d+  primary ", lines[7])  # a loaded machine may have failed over
    assert any("QUIT" in line for line in lines)  # the help text
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)


def test_unreachable_view_service_is_one_line_and_exit_3_quickly() -> None:
    address = f"127.0.0.1:{free_port()}"
    for command in (["get", "k"], ["status"]):
        started = time.monotonic()
        result = pbkv(*command, "--viewserver", address)
        assert time.monotonic() - started < 10.0
        assert result.returncode == 3, (command, result)  # unavailable, not "not found"
        assert result.stderr == f"pbkv: error: cannot reach the view service at {address}\n"
    dump = pbkv("dump", "--server", address)
    assert dump.returncode == 3 and dump.stderr.count("\n") == 1


def test_bad_arguments_exit_2_without_a_traceback() -> None:
    for command in (
        ["get", "k", "--viewserver", "no-port-here"],
        ["put", "k", "v", "--timeout", "-1"],
        ["viewserver", "--listen", "127.0.0.1:0", "--dead-pings", "0"],
        ["viewserver", "--listen", "127.0.0.1:0", "--no-data-dir", "--forget-after-s", "1.9"],
    ):
        result = pbkv(*command)
        assert result.returncode == 2, (command, result)
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("pbkv: error: ")
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_listen_port_in_use_is_one_line_and_exit_2(shared_cluster: Cluster) -> None:
    address = shared_cluster.address
    result = pbkv("viewserver", "--listen", address, "--no-data-dir")
    assert result.returncode == 2
    assert result.stderr.startswith(f"pbkv: error: cannot listen on {address}")
    assert "Traceback" not in result.stderr


def test_nodes_stop_cleanly_on_sigterm(cluster: Cluster) -> None:
    for node in [*cluster.servers, cluster.viewserver]:
        started = time.monotonic()
        assert node.terminate() == 0
        assert time.monotonic() - started < 1.5
        assert " stopped exit_code=0" in node.log_text()


JSON = ("--log-format", "json")


def test_json_logs_have_node_view_and_event() -> None:
    port = free_port()
    listen = ["--listen", f"127.0.0.1:{port}", "--no-data-dir"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pbkv", "viewserver", *listen, *JSON],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = json.loads(process.stderr.readline())
        assert {"ts", "node", "view", "event"} <= set(first)
        assert first["node"] == f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(5)
