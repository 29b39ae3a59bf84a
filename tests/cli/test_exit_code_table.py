"""The one exit-code table (``pbkv.cli.exits``, shown in every ``--help``) and the codes commands
really exit with, in this process: a constant changed without its help line, ``probe``'s
"no answer" taken for a refusal, ``PBKV_DEBUG=0`` read as "on" and a late Ctrl-C were mutants
every suite passed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pbkv.cli import cluster_observe_commands
from pbkv.cli import main as cli_main
from pbkv.cli.exits import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from pbkv.cluster.state import ClusterState, ProcessRecord, save_state
from tests.cluster.inprocess import run_main


def test_the_help_table_names_the_codes_the_commands_use() -> None:
    shown = {int(code): word for code, word in re.findall(r"(\d+) ([a-z]+)", EXIT_CODES_HELP)}
    assert shown == {
        EXIT_OK: "ok",
        EXIT_NOT_FOUND: "not",
        EXIT_USAGE: "usage",
        EXIT_UNAVAILABLE: "unavailable",
        EXIT_REFUSED: "refused",
        EXIT_FAILED: "failed",
        EXIT_INTERNAL: "internal",
        EXIT_INTERRUPTED: "interrupted",
    }


@pytest.mark.parametrize(
    ("answer", "code"),
    [("ok: 'v'", 0), ("ok: no such key", 0), ("wrong_server", 4), ("no answer", 3)],
)
def test_probe_exits_with_what_the_server_answered(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: str,
    code: int,
) -> None:
    record = ProcessRecord("s1", "server", "primary", "127.0.0.1:7001", 0, 0, 0, "s1.log", (), 0.0)
    save_state(ClusterState(tmp_path, "127.0.0.1:7000", 0.1, 5, 0, 0.0, (record,)))
    monkeypatch.setattr(cluster_observe_commands, "probe_get", lambda *args: answer)
    result = run_main(monkeypatch, capsys, tmp_path, "cluster", "probe", "s1", "k", "--dir", ".")
    assert result == (code, f"s1 127.0.0.1:7001: {answer}\n", "")


def _raising(error: BaseException) -> object:
    def main(*args: object, **kwargs: object) -> None:
        raise error

    return main


def test_a_late_ctrl_c_is_130_and_pbkv_debug_0_is_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_main.cli, "main", _raising(KeyboardInterrupt()))
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert (exited.value.code, capsys.readouterr().err) == (130, "pbkv: interrupted\n")
    monkeypatch.setenv("PBKV_DEBUG", "0")
    monkeypatch.setattr(cli_main.cli, "main", _raising(RuntimeError("a bug")))
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == 70
    assert capsys.readouterr().err.startswith("pbkv: internal error: RuntimeError: a bug (")
