"""The event loop (uvloop when installed) and a drift-free ticker.

The ticker schedules each tick by deadline, not by "interval after the last one", so ticks do not
drift. When the loop falls behind (a long handler, a paused process), it runs the ticks it owes
but never more than ``catch_up_max`` at once, then resynchronises: a process resumed after a
SIGSTOP does not see a burst of time pass in one step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is importable, else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh loop from ``new_event_loop``."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def due_ticks(
    now: float, deadline: float, interval_s: float, catch_up_max: int
) -> tuple[int, float]:
    """Ticks to run when the timer for ``deadline`` fires at ``now``, and the next deadline."""
    owed = 1 + max(0, int((now - deadline) // interval_s))
    if owed > catch_up_max:
        return catch_up_max, now + interval_s
    return owed, deadline + owed * interval_s


class Ticker:
    """Calls ``on_tick(count)`` about every ``interval_s`` on the loop; ``count`` >= 1 ticks are
    due (more than one only when the loop was late)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval_s: float,
        on_tick: Callable[[int], None],
        catch_up_max: int,
    ) -> None:
        self.loop = loop
        self.interval_s = interval_s
        self.on_tick = on_tick
        self.catch_up_max = catch_up_max
        self._deadline = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.late_s = 0.0  # how late the current tick fired (a stalled loop or process)

    def start(self) -> None:
        self._deadline = self.loop.time() + self.interval_s
        self._handle = self.loop.call_at(self._deadline, self._fire)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        now = self.loop.time()
        self.late_s = now - self._deadline
        count, self._deadline = due_ticks(now, self._deadline, self.interval_s, self.catch_up_max)
        self._handle = self.loop.call_at(self._deadline, self._fire)
        self.on_tick(count)
