"""``pbkv sim --jobs`` is bounded and the sweep's pool is capped (review: ``--jobs 100000``
forked thousands of workers for a handful of seeds and hung), and a worker that dies or whose
result cannot be read stops the sweep with one line instead of hanging it (a mypyc-compiled
result did, 2026-12-03)."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from pbkv.cli.main import cli, main
from pbkv.cluster.processes import process_state
from pbkv.sim.params import Overrides
from pbkv.sim.sweep import JOBS_PER_CPU_MAX, pool_size, results
from tests.leaks import PROC, kill_all, parent_of

sweep_module = importlib.import_module("pbkv.sim.sweep")  # pbkv.sim.sweep is also a function


class _InlinePool:
    """Records the size asked for and runs the work in this process."""

    sizes: list[int] = []

    def __init__(self, size: int, **options: object) -> None:
        self.sizes.append(size)

    def map(
        self, function: Callable[[Any], Any], work: Iterable[Any], chunksize: int
    ) -> Iterator[Any]:
        return map(function, work)

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        pass


def test_the_pool_never_exceeds_the_seeds_nor_four_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep_module, "ProcessPoolExecutor", _InlinePool)
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


def _dies_at_seed_3(job: tuple[int, Overrides]) -> int:
    if job[0] == 3:
        os._exit(9)  # as the kernel's out-of-memory killer would end it
    return job[0]


def _fails_to_unpickle() -> None:
    raise ValueError("this result cannot be read")


class _Unreadable:
    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return _fails_to_unpickle, ()


def _unreadable_at_seed_3(job: tuple[int, Overrides]) -> Any:
    return _Unreadable() if job[0] == 3 else job[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("worker", "cause"),
    [(_dies_at_seed_3, "terminated abruptly"), (_unreadable_at_seed_3, "cannot be read")],
)
def test_a_lost_worker_or_an_unreadable_result_stops_the_sweep(
    monkeypatch: pytest.MonkeyPatch, worker: Callable[[Any], Any], cause: str
) -> None:
    """Forked workers inherit the patched ``_run_one``. With ``multiprocessing.Pool`` both
    cases waited forever."""
    monkeypatch.setattr(sweep_module, "_run_one", worker)
    got: list[Any] = []
    with pytest.raises(sweep_module.SweepWorkerLost) as raised:
        got.extend(results(range(1, 41), Overrides(), jobs=2))
    message = str(raised.value)
    assert cause in message and "the sweep stopped" in message, message
    assert "\n" not in message
    assert got == list(range(1, len(got) + 1)) and 3 not in got  # in order, up to the loss


def test_the_cli_reports_a_lost_worker_in_one_line_with_exit_5(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sweep_module, "_run_one", _dies_at_seed_3)
    monkeypatch.setattr(sys, "argv", ["pbkv", "sim", "--seeds", "40", "--jobs", "2"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 5
    error = capsys.readouterr().err
    assert error.startswith("pbkv: error: a sweep worker process died"), error
    assert error.count("\n") == 1 and "Traceback" not in error


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (``/proc/N/stat``; the ``children`` file
    needs a kernel option)."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                if parent_of(entry) == pid and _alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    return process_state(pid) != "dead"


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_the_workers_die_with_a_killed_sweep() -> None:
    """``kill -9`` of ``pbkv sim --jobs 2``: its workers go too (they waited for work
    forever under a ``concurrent.futures`` pool)."""
    sweep_process = subprocess.Popen(
        [sys.executable, "-m", "pbkv", "sim", "--seeds", "5000", "--jobs", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2:
            workers = _children(sweep_process.pid)
            assert time.monotonic() < deadline, "the sweep started no workers"
            time.sleep(0.05)
        sweep_process.kill()
        sweep_process.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(worker) for worker in workers):
            assert time.monotonic() < deadline, f"workers outlived the sweep: {workers}"
            time.sleep(0.05)
    finally:
        sweep_process.kill()
        kill_all({worker: "" for worker in workers if _alive(worker)})
