"""How long the fuzz tests run: a short run in ``make test``, ``FUZZ_SECONDS`` in ``make fuzz``.

``make fuzz`` sets ``PBKV_FUZZ_SECONDS``; each fuzz test then repeats its hypothesis property
(``FUZZ_EXAMPLES`` fresh random examples per round, no example database) until its share of
the time is spent. Without it, one round of ``SHORT_EXAMPLES`` runs: seconds in all. A failure
prints hypothesis' shrunk falsifying example, which is the reproduction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Final

from hypothesis import HealthCheck, settings

SHORT_EXAMPLES: Final = 60
FUZZ_EXAMPLES: Final = 300
FUZZ_TESTS: Final = 5  # the fuzz tests share FUZZ_SECONDS equally
_COMMON: Final[dict[str, Any]] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": list(HealthCheck),
}


def fuzz_seconds() -> float:
    return float(os.environ.get("PBKV_FUZZ_SECONDS", "0") or 0)


def short(test: Callable[..., None]) -> Callable[..., None]:
    return settings(max_examples=SHORT_EXAMPLES, **_COMMON)(test)


def long(test: Callable[..., None]) -> Callable[..., None]:
    return settings(max_examples=FUZZ_EXAMPLES, **_COMMON)(test)


def run(short_round: Callable[[], None], long_round: Callable[[], None]) -> int:
    """One short round, or long rounds until this test's share of the fuzz time is spent;
    returns the rounds run."""
    seconds = fuzz_seconds()
    if seconds <= 0:
        short_round()
        return 1
    deadline = time.monotonic() + seconds / FUZZ_TESTS
    rounds = 0
    while rounds == 0 or time.monotonic() < deadline:
        long_round()
        rounds += 1
    print(f"{long_round.__name__}: {rounds} rounds of {FUZZ_EXAMPLES} examples")
    return rounds
