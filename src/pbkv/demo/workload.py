"""The demo's live workload: several clients writing unique values and reading, recorded.

Theory of operation: ``clients`` sequential clients (one ``pbkv.AsyncClient`` each, all on one
event loop in a background thread) pick a key at random and do one operation at a time:

* on ``log-*`` keys, ``append`` of a token unique to the whole run (``[c2.17]``) or ``get``;
* on ``reg-*`` keys, ``put`` of a unique value (``c2.18``) or ``get``.

Append-only keys make damage visible without a checker: every acknowledged token must be in the
final value exactly once, and no token may appear twice. Every call is recorded as a
``pbkv.check.Operation`` with ``time.monotonic()`` invoke and complete times; a call that failed
with ``Unavailable`` is recorded with ``complete=None`` (it may or may not have taken effect).
Each client pauses ``pause_s`` between operations so the history stays small enough to check
quickly.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Final

from pbkv.check.history import Operation
from pbkv.client import AsyncClient
from pbkv.errors import RequestRejected, Unavailable

LOG_KEYS: Final = ("log-a", "log-b", "log-c")
REGISTER_KEYS: Final = ("reg-a", "reg-b", "reg-c")
WORKLOAD_KEYS: Final = LOG_KEYS + REGISTER_KEYS
TOKEN: Final = re.compile(r"\[c\d+\.\d+\]")
CLIENTS_DEFAULT: Final = 4
PAUSE_S_DEFAULT: Final = 0.02
OPERATION_TIMEOUT_S_DEFAULT: Final = 5.0


def token(client: int, number: int) -> str:
    """The unique text client ``client`` appends in its ``number``-th operation."""
    return f"[c{client}.{number}]"


@dataclass(slots=True)
class WorkloadStats:
    """What the clients did so far."""

    completed: int = 0
    failed: int = 0
    completions: list[float] = field(default_factory=list)


class Workload:
    """Runs the clients in a background thread between ``start`` and ``stop``."""

    def __init__(
        self,
        viewserver: str,
        clients: int = CLIENTS_DEFAULT,
        pause_s: float = PAUSE_S_DEFAULT,
        timeout_s: float = OPERATION_TIMEOUT_S_DEFAULT,
        seed: int = 0,
    ) -> None:
        self.viewserver = viewserver
        self.clients = clients
        self.pause_s = pause_s
        self.timeout_s = timeout_s
        self.rng = random.Random(seed)
        self.history: list[Operation] = []
        self.stats = WorkloadStats()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="pbkv-demo-workload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> list[Operation]:
        """Stop the clients (each finishes or times out its current call); return the history."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s if timeout_s is not None else self.timeout_s + 2.0)
        with self._lock:
            return list(self.history)

    def completions_between(self, start: float, end: float) -> list[float]:
        with self._lock:
            return [t for t in self.stats.completions if start <= t <= end]

    def snapshot(self) -> tuple[int, int]:
        """(operations completed, operations that failed) so far."""
        with self._lock:
            return self.stats.completed, self.stats.failed

    def _main(self) -> None:
        asyncio.run(self._run_clients())

    async def _run_clients(self) -> None:
        seeds = [self.rng.getrandbits(32) for _ in range(self.clients)]
        async with asyncio.TaskGroup() as group:
            for index, seed in enumerate(seeds, start=1):
                group.create_task(self._client(index, random.Random(seed)))

    async def _client(self, index: int, rng: random.Random) -> None:
        name = f"c{index}"
        number = 0
        async with AsyncClient(self.viewserver, timeout=self.timeout_s) as client:
            while not self._stopping.is_set():
                number += 1
                key = rng.choice(WORKLOAD_KEYS)
                if rng.random() < 0.4:
                    op, value = "get", None
                elif key in LOG_KEYS:
                    op, value = "append", token(index, number)
                else:
                    op, value = "put", f"c{index}.{number}"
                await self._one(client, name, op, key, value)
                await asyncio.sleep(self.pause_s)

    async def _one(
        self, client: AsyncClient, name: str, op: str, key: str, value: str | None
    ) -> None:
        invoke = time.monotonic()
        result: str | None = None
        complete: float | None
        try:
            if op == "get":
                result = await client.get(key)
            elif op == "append":
                assert value is not None
                await client.append(key, value)
            else:
                assert value is not None
                await client.put(key, value)
            complete = time.monotonic()
        except Unavailable:
            complete = None
        except RequestRejected:
            return  # final refusal: it took no effect, so it is not part of the history
        record = Operation(name, op, key, value, invoke, complete, result)  # type: ignore[arg-type]
        with self._lock:
            self.history.append(record)
            if complete is None:
                self.stats.failed += 1
            else:
                self.stats.completed += 1
                self.stats.completions.append(complete)


def longest_stall(completions: list[float], start: float, end: float) -> float:
    """The longest stretch in ``[start, end]`` with no operation completing."""
    points = sorted(t for t in completions if start <= t <= end)
    edges = [start, *points, end]
    return max((b - a for a, b in itertools.pairwise(edges)), default=end - start)
