"""Exit codes at the edges (review): Ctrl-C during ``cluster logs --follow`` exited 0 (it is 130,
interrupted); a reader that went away (``cluster logs | head -1``) made it exit 1 (it is 0,
quietly, as Unix tools do); ``bench`` against a view service that does not answer exited 2 with
an empty reason (it is 3, unavailable, with the reason)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pbkv.cli import client_commands
from pbkv.cli.main import PipeClosed, cli
from pbkv.cluster import processes
from tests.cli.helpers import INTERRUPTIBLE_EXEC, UNREACHABLE, one_line, run_pbkv

LOG_LINES = 20_000


def logs_on_disk(tmp_path: Path) -> Path:
    """A cluster directory whose cluster is down and whose log is long."""
    directory = tmp_path / "cluster"
    (directory / "logs").mkdir(parents=True)
    line = "2026-12-01T20:41:24.743Z server=127.0.0.1:7001 view=2 view_learned role=backup\n"
    (directory / "logs" / "s1.log").write_text(line * LOG_LINES)
    return directory


def start_logs(directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The child gets SIGINT's default disposition: a pytest worker can hold SIGINT and SIGQUIT
    ignored for a moment (what system(3) does around its child), and an ignored SIGINT is
    inherited, so Python would install no handler and Ctrl-C would be ignored, as Unix wants
    for a background job (seen in ``make test-compiled``: SigIgn 0x81001006 on the child)."""
    command = [sys.executable, "-m", "pbkv", "cluster", "logs", "--dir", str(directory), *extra]
    return subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE_EXEC, *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_reader_that_goes_away_ends_the_output_quietly_with_0(tmp_path: Path) -> None:
    logs = start_logs(logs_on_disk(tmp_path))
    assert logs.stdout is not None and logs.stdout.readline()  # as `| head -1` does
    logs.stdout.close()
    _, stderr = logs.communicate(timeout=60)
    assert (logs.returncode, stderr) == (0, b"")


def test_ctrl_c_while_following_the_logs_is_exit_130(tmp_path: Path) -> None:
    logs = start_logs(logs_on_disk(tmp_path), "--follow")
    assert logs.stdout is not None and logs.stdout.readline()  # it follows now
    logs.send_signal(signal.SIGINT)
    logs.communicate(timeout=60)
    assert logs.returncode == 130


def test_a_broken_connection_is_not_taken_for_a_closed_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(client_commands, "query", broken)
    result = CliRunner().invoke(cli, ["status", "--viewserver", UNREACHABLE])
    assert isinstance(result.exception, PipeClosed)
    assert PipeClosed.exit_code == 5
    assert str(result.exception) == "Broken pipe: the other side closed"


def test_bench_against_a_view_service_that_does_not_answer_is_unavailable() -> None:
    line = one_line(run_pbkv("bench", "--viewserver", UNREACHABLE, "--duration", "1"), code=3)
    assert line.endswith(f"cannot reach the view service at {UNREACHABLE}")
    with socket.socket() as silent:  # accepts (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        line = one_line(run_pbkv("bench", "--viewserver", address, "--duration", "1"), code=3)
    assert line.endswith(f"no answer from the view service at {address}: timed out")


def test_the_default_view_service_unreachable_says_where_a_cluster_was_looked_for(
    tmp_path: Path,
) -> None:
    """A learner in another directory than the cluster's (walk-through review): the one line
    says that no cluster was found here, not only that 127.0.0.1:7000 does not answer."""
    if not processes.port_free("127.0.0.1", 7000):
        pytest.skip("something listens on 127.0.0.1:7000")
    result = run_pbkv("get", "k", cwd=tmp_path, env={"PBKV_VIEWSERVER": "", "PBKV_CLUSTER_DIR": ""})
    assert result.returncode == 3, result
    assert result.stderr == (
        "pbkv: error: cannot reach the view service at 127.0.0.1:7000 (no cluster in .pbkv "
        "here: run pbkv in the cluster's directory, or give --viewserver or $PBKV_VIEWSERVER)\n"
    )
