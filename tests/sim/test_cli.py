"""``pbkv sim``: exit codes, the printed replay line, and that the line replays the failure."""

from __future__ import annotations

import functools
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from pbkv.cli import sim_commands
from pbkv.cli.main import cli
from pbkv.sim import run_simulation
from tests.sim import broken
from tests.sim.test_broken_variants import first_caught


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["sim", *args])
    return result.exit_code, result.output


def test_one_clean_seed_prints_parameters_and_outcome_and_exits_0() -> None:
    code, output = invoke("--seed", "3")
    assert code == 0, output
    assert output.startswith("seed 3: servers=")
    assert "faults for 2000 ticks" in output
    assert "outcome: " in output and "trace hash " in output


def test_a_sweep_prints_a_summary_and_exits_0() -> None:
    code, output = invoke("--seeds", "3", "--first-seed", "10")
    assert code == 0, output
    assert "swept 3 seeds (10..12)" in output
    assert "deliveries/s" not in output or "per core" in output


@pytest.mark.parametrize(
    "args",
    [(), ("--seed", "1", "--seeds", "2"), ("--seeds", "2", "--trace", "x.jsonl"), ("--seed", "x")],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    code, _ = invoke(*args)
    assert code == 2


def test_trace_and_history_files_are_written(tmp_path: Path) -> None:
    trace, history = tmp_path / "run.jsonl", tmp_path / "history.jsonl"
    code, output = invoke("--seed", "2", "--trace", str(trace), "--history", str(history))
    assert code == 0, output
    assert trace.read_text().startswith('{"tick":0,"event":"phase"')
    assert history.read_text().count("\n") > 0


def test_a_failing_seed_exits_1_and_its_replay_line_reproduces_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    factory = broken.AnswersBeforeBackup
    failing = first_caught(replica_factory=factory)
    assert failing is not None
    patched = functools.partial(run_simulation, replica_factory=factory)
    monkeypatch.setattr(sim_commands, "run_simulation", patched)
    code, output = invoke("--seed", str(failing.seed), "--no-shrink")
    assert code == 1, output
    assert f"failed check: {failing.check}" in output
    assert "last events:" in output
    replay = next(line for line in output.splitlines() if line.startswith("replay: "))
    assert replay == f"replay: pbkv sim --seed {failing.seed}"
    code_again, output_again = invoke(*shlex.split(replay.removeprefix("replay: pbkv sim ")))
    assert code_again == 1
    assert f"failed check: {failing.check}" in output_again


def test_a_failure_is_shrunk_to_a_smaller_replay_line(monkeypatch: pytest.MonkeyPatch) -> None:
    factory = broken.AnswersBeforeBackup
    failing = first_caught(replica_factory=factory)
    assert failing is not None
    patched = functools.partial(run_simulation, replica_factory=factory)
    monkeypatch.setattr(sim_commands, "run_simulation", patched)
    code, output = invoke("--seed", str(failing.seed))
    assert code == 1
    shrunk = next(line for line in output.splitlines() if line.startswith("shrunk to: "))
    args = shlex.split(shrunk.removeprefix("shrunk to: pbkv sim "))
    assert len(args) > 2
    code_again, output_again = invoke(*args, "--no-shrink")
    assert code_again == 1 and f"failed check: {failing.check}" in output_again
