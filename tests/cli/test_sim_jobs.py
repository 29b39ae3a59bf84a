"""``pbkv sim --jobs`` is bounded and the sweep's pool is capped (review: ``--jobs 100000``
forked thousands of workers for a handful of seeds and hung)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import pytest
from click.testing import CliRunner

from pbkv.cli.main import cli
from pbkv.sim.params import Overrides
from pbkv.sim.sweep import JOBS_PER_CPU_MAX, pool_size, results

sweep_module = importlib.import_module("pbkv.sim.sweep")  # pbkv.sim.sweep is also a function


class _InlinePool:
    """Records the size asked for and runs the work in this process."""

    sizes: list[int] = []

    def __init__(self, size: int) -> None:
        self.sizes.append(size)

    def imap(
        self, function: Callable[[Any], Any], work: Iterable[Any], chunksize: int
    ) -> Iterator[Any]:
        return map(function, work)

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *args: type[BaseException] | BaseException | TracebackType | None) -> None:
        pass


class _Context:
    Pool = _InlinePool


def test_the_pool_never_exceeds_the_seeds_nor_four_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep_module.multiprocessing, "get_context", lambda method: _Context())
    monkeypatch.setattr(sweep_module, "run_simulation", lambda seed, overrides: seed)
    _InlinePool.sizes.clear()
    got: list[Any] = list(results(range(3), Overrides(), jobs=100_000))
    assert got == [0, 1, 2]
    assert _InlinePool.sizes == [min(3, (os.cpu_count() or 1) * JOBS_PER_CPU_MAX)]
    got = list(results(range(1), Overrides(), jobs=50))
    assert got == [0]  # one seed: no pool at all
    assert len(_InlinePool.sizes) == 1
    assert pool_size(100_000, 10**6) == (os.cpu_count() or 1) * JOBS_PER_CPU_MAX
    assert pool_size(2, 10) == 2


def test_jobs_beyond_the_bound_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["sim", "--seeds", "1", "--jobs", "100000"])
    assert result.exit_code == 2
    assert "1<=x<=256" in result.output
