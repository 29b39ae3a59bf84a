"""``pbkv bench`` on the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pbkv.cli.bench_commands import bench
from pbkv.cluster.processes import free_port
from pbkv.errors import PbkvError


def test_help_lists_every_flag_of_the_issue() -> None:
    outcome = CliRunner().invoke(bench, ["--help"])
    assert outcome.exit_code == 0
    for flag in (
        "--clients",
        "--duration",
        "--write-ratio",
        "--keys",
        "--value-size",
        "--procs",
        "--json",
        "--kill-primary-at",
        "--primary-pid",
        "--local-cluster",
        "--cluster-dir",
        "--viewserver",
        "--backend",
        "--redis",
    ):
        assert flag in outcome.output


def test_json_output_of_a_null_run() -> None:
    arguments = ["--backend", "null", "--clients", "2", "--duration", "0.2", "--json"]
    outcome = CliRunner().invoke(bench, arguments)
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.output)
    assert document["backend"] == "null"
    assert document["ops"] > 0
    assert set(document["latency_ms"]) == {"mean", "p50", "p99", "p99.9", "max"}


def test_human_output_of_repeated_runs_ends_with_medians() -> None:
    arguments = ["--backend", "null", "--clients", "1", "--duration", "0.1", "--runs", "2"]
    outcome = CliRunner().invoke(bench, [*arguments, "--warmup", "0"])
    assert outcome.exit_code == 0, outcome.output
    assert "median of 2 runs" in outcome.output


def test_kill_primary_needs_a_way_to_find_the_primary() -> None:
    outcome = CliRunner().invoke(bench, ["--kill-primary-at", "1", "--duration", "2"])
    assert outcome.exit_code != 0
    assert "--primary-pid" in str(outcome.exception) + outcome.output


@pytest.mark.integration
@pytest.mark.skipif(sys.platform != "linux", reason="local clusters are tested on Linux")
def test_against_a_local_pbkv_cluster() -> None:
    arguments = ["--local-cluster", "--clients", "4", "--duration", "0.5", "--json"]
    outcome = CliRunner().invoke(bench, arguments)
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.output)
    assert document["ops"] > 0
    assert document["errors"] == 0
    assert document["retries"] is not None


def test_an_unreachable_system_fails_fast_with_one_line() -> None:
    port = free_port()
    outcome = CliRunner().invoke(bench, ["--backend", "redis", "--redis", f"127.0.0.1:{port}"])
    assert isinstance(outcome.exception, PbkvError)
    assert "cannot reach the Redis server" in str(outcome.exception)
    assert outcome.exception.exit_code == 3  # unavailable, not a usage error (review)


def test_inside_a_cluster_directory_it_measures_that_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `pbkv put` does (walk-through review: it went to 127.0.0.1:7000 instead)."""
    from pbkv.cluster.state import ClusterState, save_state

    address = f"127.0.0.1:{free_port()}"
    save_state(ClusterState(tmp_path / ".pbkv", address, 0.1, 5, 0, 1.0, ()))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PBKV_VIEWSERVER", raising=False)
    monkeypatch.delenv("PBKV_CLUSTER_DIR", raising=False)
    outcome = CliRunner().invoke(bench, ["--clients", "1", "--duration", "0.1"])
    assert isinstance(outcome.exception, PbkvError)
    assert f"cannot reach the view service at {address}" in str(outcome.exception)
