"""The load generator against in-process fake backends: counts, errors, ratios, gaps."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pbkv.bench.backends import NullBackend, backend_factory, open_null
from pbkv.bench.loadgen import (
    Backend,
    LoadSpec,
    RunHooks,
    TimedAction,
    clients_of_process,
    make_keys,
    make_value,
    run_load,
)


def short(**fields: Any) -> LoadSpec:
    """A 0.3-second spec."""
    return LoadSpec(duration_s=0.3, warmup_s=0.05, **fields)


class StallingBackend(NullBackend):
    """Answers at once, except that nothing completes while ``stalled`` is set."""

    stalled_until = 0.0

    async def _step(self) -> None:
        await asyncio.sleep(0)
        while time.monotonic() < StallingBackend.stalled_until:
            await asyncio.sleep(0.001)


async def open_stalling() -> Backend:
    return StallingBackend()


def test_null_backend_run_counts_every_operation() -> None:
    spec = short(clients=4, write_ratio=0.5, keys=100)
    progress_calls: list[tuple[float, float, int]] = []
    hooks = RunHooks(progress=lambda *args: progress_calls.append(args))
    result = run_load(spec, open_null, "null", hooks)
    assert result.ops > 100
    assert result.ops == result.latency.count == result.reads + result.writes
    assert 0.3 < result.writes / result.ops < 0.7
    assert result.errors == 0
    assert result.ops_per_s == pytest.approx(result.ops / 0.3)
    assert result.latency.p50_ns <= result.latency.p99_ns <= result.latency.p999_ns
    assert result.longest_gap_ms < 300
    assert progress_calls, "the progress callback never ran"
    assert result.retries is None
    assert any("retries" in note for note in result.notes)


@pytest.mark.parametrize(("write_ratio", "reads_expected"), [(1.0, False), (0.0, True)])
def test_write_ratio_extremes(write_ratio: float, reads_expected: bool) -> None:
    result = run_load(short(clients=2, write_ratio=write_ratio), open_null, "null")
    assert (result.reads > 0) is reads_expected
    assert (result.writes > 0) is not reads_expected


def test_failures_are_counted_and_do_not_stop_the_workers() -> None:
    factory = backend_factory("null", "")
    assert factory is not None

    async def failing() -> Backend:
        return NullBackend(fail_every=10)

    result = run_load(short(clients=3), failing, "null")
    assert result.errors > 0
    assert result.ops > 5 * result.errors
    assert result.error_kinds == {"RuntimeError: injected failure": result.errors}


def test_a_stall_shows_as_the_longest_gap_and_the_timed_action_finds_its_end() -> None:
    fired: list[float] = []

    def stall() -> None:
        fired.append(time.monotonic())
        StallingBackend.stalled_until = time.monotonic() + 0.15

    spec = LoadSpec(clients=4, duration_s=0.6, warmup_s=0.05)
    hooks = RunHooks(timed_action=TimedAction(0.2, stall))
    result = run_load(spec, open_stalling, "stall", hooks)
    assert len(fired) == 1
    assert result.kill_at_s == pytest.approx(0.2, abs=0.05)
    assert 140 <= result.longest_gap_ms <= 260
    assert result.resumed_after_kill_ms is not None
    assert 140 <= result.resumed_after_kill_ms <= 260


def test_two_processes_merge_their_results() -> None:
    spec = LoadSpec(clients=4, procs=2, duration_s=0.5, warmup_s=0.1, write_ratio=1.0)
    hooks = RunHooks(timed_action=TimedAction(0.1, lambda: None))
    result = run_load(spec, backend_factory("null", ""), "null", hooks)
    assert result.ops > 100
    assert result.writes == result.ops
    assert result.kill_at_s is not None
    assert result.longest_gap_ms < 100


def test_clients_are_split_round_robin_over_processes() -> None:
    spec = LoadSpec(clients=5, procs=2)
    assert [clients_of_process(spec, index) for index in range(2)] == [3, 2]


def test_spec_validation_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="procs"):
        LoadSpec(clients=1, procs=2).validate()
    with pytest.raises(ValueError, match="write ratio"):
        LoadSpec(write_ratio=1.5).validate()
    with pytest.raises(ValueError, match="clients"):
        LoadSpec(clients=0).validate()


def test_keys_and_values_have_the_asked_sizes() -> None:
    keys = make_keys(1000)
    assert len(set(keys)) == 1000
    assert len(make_value(64, seed=1).encode()) == 64
    assert make_value(8, seed=1) == make_value(8, seed=1)


def test_backend_factory_refuses_unknown_backends() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        backend_factory("memcached", "127.0.0.1:1")
