"""Busy polling: keep a server's event loop awake for a while after each input.

Theory of operation. A server that has nothing to do blocks in ``epoll_wait`` and its thread
sleeps; the next message must wake it. On a virtual machine that wake-up is dear (docs/
performance.md, "Where the idle third of the machine goes": 50-110 µs per wake-up on the VM
measured, four of them per operation), and at one client or under a closed loop it is most of
an operation's latency. With ``pbkv server --busy-poll-us N`` the server instead keeps its loop
turning for N µs after the last input it received: a callback that re-schedules itself makes
the loop poll its sockets without blocking, and yields the CPU (``sched_yield``) on every turn
so that any other runnable process on that CPU goes first. Input arriving in the window is read
on the next turn, with no wake-up; once the window passes without input the loop blocks again,
so an idle server costs nothing. The price is CPU: under steady traffic the server's core is
busy all the time. Off (0) by default. Host only: the core sees the same inputs in the same
order, only sooner.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

if TYPE_CHECKING:
    from pbkv.runtime.node import NodeHost

BUSY_POLL_US_MAX: Final = 1_000_000
"""The longest window accepted (one second): beyond it a server spins through idle periods."""

T = TypeVar("T")
U = TypeVar("U")


class BusyPoller:
    """Keeps ``loop`` turning for ``window_s`` after the last ``touch``."""

    __slots__ = ("input_seen", "last_input_s", "loop", "spinning", "turns", "window_s")

    def __init__(self, loop: asyncio.AbstractEventLoop, window_s: float) -> None:
        self.loop = loop
        self.window_s = window_s
        self.input_seen = False
        self.spinning = False
        self.last_input_s = 0.0
        self.turns = 0
        """Loop turns spent polling (read by the tests)."""

    def touch(self) -> None:
        """An input arrived: poll for another window (one attribute write while spinning)."""
        self.input_seen = True
        if not self.spinning:
            self.spinning = True
            self.last_input_s = self.loop.time()
            self.loop.call_soon(self._turn)

    def _turn(self) -> None:
        now = self.loop.time()
        if self.input_seen:
            self.input_seen = False
            self.last_input_s = now
        elif now - self.last_input_s >= self.window_s:
            self.spinning = False
            return
        self.turns += 1
        os.sched_yield()  # any other runnable process on this CPU goes first
        self.loop.call_soon(self._turn)

    def wrap(self, receive: Callable[[T, U], None]) -> Callable[[T, U], None]:
        """``receive`` that first marks the input."""
        touch = self.touch

        def touched(source: T, messages: U) -> None:
            touch()
            receive(source, messages)

        return touched


def busy_poller_starter(busy_poll_us: int) -> Callable[[NodeHost], None] | None:
    """What ``serve`` calls with the started host to poll for ``busy_poll_us`` after each
    input it receives (None: 0, off)."""
    window_s = busy_poll_window_s(busy_poll_us)
    if window_s == 0:
        return None

    def start(host: NodeHost) -> None:
        network = host.network
        network.receive = BusyPoller(network.loop, window_s).wrap(network.receive)

    return start


def busy_poll_window_s(busy_poll_us: int) -> float:
    """The window in seconds. Raises ValueError outside ``0..BUSY_POLL_US_MAX``."""
    if not 0 <= busy_poll_us <= BUSY_POLL_US_MAX:
        raise ValueError(f"busy_poll_us must be in 0..{BUSY_POLL_US_MAX}, not {busy_poll_us}")
    return busy_poll_us / 1e6
