"""``pbkv server --busy-poll-us``: the loop keeps turning for the window after each input, and
only then; a server that polls serves as one that sleeps, and sleeps again when idle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from pbkv.runtime.busy_poll import (
    BUSY_POLL_US_MAX,
    BusyPoller,
    busy_poll_window_s,
    busy_poller_starter,
)
from tests.conftest import Cluster

WINDOW_S = 0.05


def test_the_loop_turns_for_a_window_after_the_last_input_then_sleeps() -> None:
    async def main() -> tuple[int, bool, int, bool, int, int]:
        poller = BusyPoller(asyncio.get_running_loop(), WINDOW_S)
        await asyncio.sleep(WINDOW_S)
        before = poller.turns  # no input yet: no turn
        poller.touch()
        await asyncio.sleep(WINDOW_S * 0.6)
        poller.touch()  # another input inside the window: it starts anew from here
        await asyncio.sleep(WINDOW_S * 0.8)  # past the first window, inside the second
        spinning_late, turns_late = poller.spinning, poller.turns
        await asyncio.sleep(WINDOW_S * 2)
        stopped, turns_stopped = not poller.spinning, poller.turns
        await asyncio.sleep(WINDOW_S)
        return before, spinning_late, turns_late, stopped, turns_stopped, poller.turns

    before, spinning_late, turns_late, stopped, turns_stopped, turns_after = asyncio.run(main())
    assert before == 0
    assert spinning_late and turns_late > 10  # many turns, none of them a sleep
    assert stopped and turns_after == turns_stopped  # asleep again: no turn without input


def test_the_window_is_bounded_and_zero_is_off() -> None:
    assert busy_poll_window_s(0) == 0 and busy_poller_starter(0) is None
    assert busy_poll_window_s(1500) == pytest.approx(0.0015)
    for wrong in (-1, BUSY_POLL_US_MAX + 1):
        with pytest.raises(ValueError, match="busy_poll_us must be in"):
            busy_poll_window_s(wrong)


class _Network:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.seen: list[tuple[str, list[int]]] = []
        self.receive: Callable[[str, list[int]], None] = self.record

    def record(self, source: str, items: list[int]) -> None:
        self.seen.append((source, items))


class _Host:
    def __init__(self, network: _Network) -> None:
        self.network = network


def test_the_started_server_marks_each_input_and_passes_it_on() -> None:
    async def main() -> tuple[list[tuple[str, list[int]]], bool]:
        network = _Network(asyncio.get_running_loop())
        start = busy_poller_starter(20_000)
        assert start is not None
        start(_Host(network))  # type: ignore[arg-type]
        network.receive("s1", [1, 2])
        cells = [cell.cell_contents for cell in network.receive.__closure__ or ()]
        [poller] = [
            c.__self__ for c in cells if isinstance(getattr(c, "__self__", None), BusyPoller)
        ]
        await asyncio.sleep(0.005)
        return network.seen, poller.spinning and poller.turns > 0

    seen, polling = asyncio.run(main())
    assert seen == [("s1", [1, 2])] and polling


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


def test_servers_that_poll_serve_and_sleep_again_when_idle(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(server_args=("--busy-poll-us", "20000"))
    client = cluster.client()
    for index in range(200):
        client.put(f"k{index % 7}", str(index))
    assert client.get("k3") == "199"
    primary = cluster.primary()
    time.sleep(0.5)  # the last window passes
    before = _cpu_s(primary.pid)
    time.sleep(2.0)
    idle_share = (_cpu_s(primary.pid) - before) / 2.0
    # Pings and their replies every 100 ms each open a 20 ms window: at most about a fifth of
    # a core, never the whole core a server polling through idle time would take.
    assert idle_share < 0.5, idle_share
