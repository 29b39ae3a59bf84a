"""CPU time of the processes in a benchmark, to tell which one is the bottleneck.

A server's CPU time comes from ``/proc/PID/stat`` (user + system); the generator's is this
process's plus that of its finished children (the generator processes of ``--procs``), from
``resource.getrusage``; ``others`` is the rest of the machine's busy time. ``CpuMeter`` turns two
readings into per-cent of one core over the interval: 100 % means one core busy all the time.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Final

GENERATOR: Final = "generator"
OTHERS: Final = "others"
"""Everything else the machine ran meanwhile (other users' work, the view service, the kernel's
own threads): busy time from ``/proc/stat`` minus the processes measured."""


def clock_ticks_per_s() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far, or None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = text[text.rfind(b")") + 2 :].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / clock_ticks_per_s()


def machine_busy_cpu_s() -> float | None:
    """CPU seconds all cores spent busy since boot (not idle, not waiting for I/O)."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = [int(field) for field in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / clock_ticks_per_s()


def generator_cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class CpuMeter:
    """Per-cent of one core used by each named process between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float | None] = {}
        self._started_at = 0.0

    def _read(self) -> dict[str, float | None]:
        readings: dict[str, float | None] = {
            name: process_cpu_s(pid) for name, pid in self.pids.items()
        }
        readings[GENERATOR] = generator_cpu_s()
        readings[OTHERS] = machine_busy_cpu_s()
        return readings

    def start(self) -> None:
        self._start = self._read()
        self._started_at = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Per-cent of a core per process (processes that vanished are left out)."""
        end = self._read()
        wall_s = max(time.monotonic() - self._started_at, 1e-9)
        usage: dict[str, float] = {}
        for name, before in self._start.items():
            after = end.get(name)
            if before is not None and after is not None:
                usage[name] = 100.0 * (after - before) / wall_s
        if OTHERS in usage:
            ours = sum(percent for name, percent in usage.items() if name != OTHERS)
            usage[OTHERS] = max(usage[OTHERS] - ours, 0.0)
        return usage


def machine_busy_percent(interval_s: float) -> float:
    """Busy CPU of the whole machine over the next ``interval_s``, in per-cent of one core."""
    before = machine_busy_cpu_s()
    time.sleep(interval_s)
    after = machine_busy_cpu_s()
    if before is None or after is None:
        return 0.0
    return 100.0 * (after - before) / interval_s


def wait_until_quiet(busy_percent_max: float, wait_s_max: float, sample_s: float = 2.0) -> float:
    """Sample the machine until it is busy less than ``busy_percent_max`` (of one core) or
    ``wait_s_max`` has passed; returns the last sample. Meant for shared machines, before a
    measurement, while the system under test is idle."""
    deadline = time.monotonic() + wait_s_max
    while True:
        busy = machine_busy_percent(sample_s)
        if busy < busy_percent_max or time.monotonic() >= deadline:
            return busy
