"""``pbkv status`` (the client command) names a server's missing view in words, as ``pbkv
cluster status`` does: a server that has reported no view since it (re)started showed view
``0`` in its table, a number a student following the guide took for a real view. The view
service is a stand-in (``monkeypatch``); the restart counts come from the local cluster's record.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from pbkv.cli import client_commands
from pbkv.cluster.state import ClusterState, ProcessRecord, save_state
from pbkv.core.messages import ServerStatus, View, ViewServiceStatus

VIEWSERVER, PRIMARY, BACKUP, IDLE = (f"127.0.0.1:{port}" for port in (7000, 7001, 7002, 7003))


def _record(name: str, kind: str, address: str, restarts: int) -> ProcessRecord:
    return ProcessRecord(
        name, kind, "idle", address, pid=os.getpid(), admin_port=1, metrics_port=2,  # type: ignore[arg-type]
        log_file=f"{name}.log", argv=(), started_at=0.0, restarts=restarts,
    )  # fmt: skip


def _cluster(directory: Path) -> None:
    """A local cluster whose s2 was restarted once; s3 never was."""
    records = (
        _record("viewserver", "viewserver", VIEWSERVER, 0),
        _record("s1", "server", PRIMARY, 0),
        _record("s2", "server", BACKUP, 1),
        _record("s3", "server", IDLE, 0),
    )
    save_state(ClusterState(directory, VIEWSERVER, 0.1, 5, 7000, 0.0, records))


def _answer() -> ViewServiceStatus:
    """View 3; s2 (restarted) and s3 (just started) pinged once, with no view yet."""
    servers = (
        ServerStatus(PRIMARY, 1, 3, 3, True),
        ServerStatus(BACKUP, 0, 0, 0, True),
        ServerStatus(IDLE, 0, 0, 0, True),
    )
    return ViewServiceStatus(View(3, PRIMARY, ()), True, False, servers, 3, 1, 100)


def _status(monkeypatch: pytest.MonkeyPatch, directory: Path, *args: str) -> str:
    monkeypatch.setenv("PBKV_CLUSTER_DIR", str(directory))
    monkeypatch.setattr(client_commands, "query", lambda *a: _answer())
    result = CliRunner().invoke(client_commands.status, ["--viewserver", VIEWSERVER, *args])
    assert result.exit_code == 0, result.output
    return result.output


def _view_cells(text: str) -> dict[str, str]:
    rows = [re.split(r"\s{2,}", line) for line in text.splitlines()[1:]]
    assert rows[0][-1] == "view"
    return {row[0]: row[-1] for row in rows[1:]}


def test_a_server_without_its_first_view_says_so_instead_of_view_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cluster(tmp_path)
    cells = _view_cells(_status(monkeypatch, tmp_path))
    assert cells == {
        PRIMARY: "3",
        BACKUP: "no view yet (restarting)",  # was "0"
        IDLE: "no view yet (starting)",
    }
    record = json.loads(_status(monkeypatch, tmp_path, "--json"))
    servers = {server["name"]: server for server in record["servers"]}
    assert servers[BACKUP]["view_number"] == 0  # the JSON keeps its types; the words are beside
    assert servers[BACKUP]["view_note"] == "no view yet (restarting)"
    assert servers[PRIMARY]["view_number"] == 3 and servers[PRIMARY]["view_note"] == ""


def test_outside_a_local_cluster_it_says_no_view_yet_without_guessing_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = _view_cells(_status(monkeypatch, tmp_path / "none"))
    assert cells[BACKUP] == cells[IDLE] == "no view yet"


@pytest.mark.parametrize("waiting", ["", "servers hold view 4 (...) (N2)"])
def test_before_view_1_the_summary_says_no_view_yet_as_cluster_status_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waiting: str
) -> None:
    """Seen during `pbkv cluster up`: "view 0  primary -  backup -  acknowledged no  cluster -",
    a view that does not exist. The words are ``pbkv cluster status``'s (one helper)."""
    from pbkv.cluster.status import no_view_summary

    answer = ViewServiceStatus(View(0), False, False, _answer().servers, 0, 0, 3, waiting)
    monkeypatch.setenv("PBKV_CLUSTER_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(client_commands, "query", lambda *a: answer)
    invoke = CliRunner().invoke
    text = invoke(client_commands.status, ["--viewserver", VIEWSERVER]).output
    expected = no_view_summary(VIEWSERVER, answer)
    assert expected.startswith("no view yet: ")
    assert text.splitlines()[0] == expected  # was "view 0  primary -  backup -  ..."
    assert "waiting" not in text.replace(expected, "")  # the service's reason once, not twice
    record = json.loads(
        invoke(client_commands.status, ["--viewserver", VIEWSERVER, "--json"]).output
    )
    assert record["view"]["number"] == 0 and record["view"]["note"] == expected
    assert record["waiting"] == waiting
    real = json.loads(_status(monkeypatch, tmp_path, "--json"))
    assert real["view"]["number"] == 3 and real["view"]["note"] == ""
    assert _status(monkeypatch, tmp_path).startswith("view 3  primary 127.0.0.1:7001  ")
