"""The event loop (uvloop when installed), a drift-free ticker, and the heap freezer.

The ticker schedules each tick by deadline, not by "interval after the last one", so ticks do not
drift. When the loop falls behind (a long handler, a paused process), it runs the ticks it owes
but never more than ``catch_up_max`` at once, then resynchronises: a process resumed after a
SIGSTOP does not see a burst of time pass in one step.

The heap freezer keeps Python's cyclic garbage collector from stalling the loop. A full
collection scans every tracked object, so a server holding 100,000 client sessions paused for
0.2-0.7 s each time its heap grew by a quarter, and missed its pings (issue #9, measured with
``scripts/measure_hostile.py``). Every ``GC_FREEZE_INTERVAL_S`` the freezer moves what survived
so far into the permanent generation (``gc.freeze``): collections then scan only what is young.
Reference counting still frees everything; what is lost is the collection of *cycles* that were
frozen and became garbage later. The core's state has none, and under uvloop the transport
creates none either (2,000 connections opened and closed left 0 objects for the collector), so
the freezer runs only on a uvloop loop; on the default loop, whose transports form cycles, it
does nothing.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

T = TypeVar("T")
GC_FREEZE_INTERVAL_S: Final = 1.0


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


def is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.startswith("uvloop")


class HeapFreezer:
    """Calls ``gc.freeze()`` every ``interval_s`` on a uvloop loop; see the module docstring."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, interval_s: float = GC_FREEZE_INTERVAL_S
    ) -> None:
        self.loop = loop
        self.interval_s = interval_s
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> bool:
        """Start freezing; False (and nothing done) on a loop other than uvloop."""
        if not is_uvloop(self.loop):
            return False
        self._freeze()
        return True

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _freeze(self) -> None:
        gc.freeze()
        self._handle = self.loop.call_later(self.interval_s, self._freeze)
