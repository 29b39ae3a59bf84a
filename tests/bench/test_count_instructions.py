"""scripts/count_instructions.py: its load completes every operation over real sockets, and the
count per operation is the difference of its two runs."""

from __future__ import annotations

import asyncio
from types import ModuleType

import pytest

from pbkv.runtime.config import Timing
from pbkv.runtime.loop import run
from tests.bench import scripts


def load_script() -> ModuleType:
    return scripts.load_script("count_instructions")


def test_the_load_completes_every_operation_it_is_given() -> None:
    script = load_script()
    quick = Timing(ping_interval_s=0.02, dead_pings=25)
    assert run(asyncio.wait_for(script.load(4, 200, 0.5, quick), 60)) == 200


def test_per_operation_is_the_difference_of_the_two_runs() -> None:
    script = load_script()
    assert script.per_operation(1_000, 7_000, 1_000) == 3.0  # (7000 - 1000) / 2000


def test_operations_and_clients_must_be_positive() -> None:
    script = load_script()
    assert script.parse_arguments(["--ops", "5"]).ops == 5
    for option in ("--ops", "--clients"):
        with pytest.raises(SystemExit):
            script.parse_arguments([option, "0"])


def test_without_valgrind_it_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_script()
    monkeypatch.setattr(script.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="valgrind is not installed"):
        script.main(["--ops", "10"])
