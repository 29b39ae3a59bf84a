"""scripts/bench_core_path.py: it completes every operation it submits and measures each side."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.bench import scripts


def load_script() -> ModuleType:
    return scripts.load_script("bench_core_path")


@pytest.mark.parametrize("calls", [False, True])
def test_every_operation_completes_and_each_side_is_measured(calls: bool) -> None:
    bench = load_script()
    result = bench.measure(clients=4, rounds=20, write_ratio=0.5, seed=1, calls=calls)
    unit = "calls" if calls else "us"
    assert set(result) == {f"{side}_{unit}" for side in ("client", "primary", "backup")}
    assert all(value > 0 for value in result.values())
    if calls:  # every operation costs each side at least a handler call and a decode
        assert all(value >= 2 for value in result.values())


def test_an_operation_that_never_completes_is_reported() -> None:
    """A backup that stops answering once the view formed: nothing is confirmed, nothing
    answered, and the run says so instead of printing figures."""
    bench: Any = load_script()

    class SilentBackup(bench.Rig):  # type: ignore[misc]
        formed = False

        def form_view(self) -> None:
            super().form_view()
            self.formed = True

        def run_replica(self, replica: Any) -> None:
            if self.formed and replica is self.backup:
                self.inboxes.pop(replica.name, None)
                return
            super().run_replica(replica)

    bench.Rig = SilentBackup
    with pytest.raises(SystemExit, match="only 0 of 6 operations completed"):
        bench.measure(clients=2, rounds=3, write_ratio=1.0, seed=1, calls=False)


def test_durable_disk_appends_every_batch_to_a_real_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--durable disk`` prices the write-ahead log: the replicas' records reach it, each
    position once; ``core`` makes the records and appends nothing; its directories are gone."""
    bench: Any = load_script()
    appended: list[int] = []
    directories: set[Path] = set()
    persist = bench.ReplicaDisk.persist

    def counting(disk: Any, effect: Any) -> None:
        appended.extend(record.index for record in effect.records if hasattr(record, "index"))
        directories.add(Path(disk.log.directory))
        persist(disk, effect)

    monkeypatch.setattr(bench.ReplicaDisk, "persist", counting)
    run = {"clients": 3, "rounds": 4, "write_ratio": 1.0, "seed": 1, "calls": False}
    bench.measure(**run, durable="core")
    assert appended == []
    result = bench.measure(**run, durable="disk")
    assert all(value > 0 for value in result.values())
    assert sorted(appended) == sorted(list(range(12)) * 2), "each position on both replicas"
    assert len(directories) == 2 and not any(path.exists() for path in directories)
