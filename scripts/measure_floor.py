"""The Python floor: docs/performance.md, "The Python floor".

Runs side by side, in one process tree on loopback and with the same closed-loop generator:
Redis primary + replica (``SET`` + ``WAIT 1 0`` / ``GET``), the floor server of
``pbkv.bench.floor_server`` (a primary-backup store in Python that does nothing but parse,
store, forward and acknowledge; forwards batched per loop iteration, and sent at once), and
pbkv (view service + 2 servers; with ``--read-leases`` its reads are leased like the floor's).
Each cell is the median of REPEAT runs, systems in rotating order. Prints one markdown table:
throughput and p50 of each, floor/Redis (the best a Python implementation of the design reaches
here) and pbkv/floor (how close pbkv comes to it), then the CPU microseconds per operation of
each process (user + system), which says where the difference goes.

Usage: python scripts/measure_floor.py [--duration S] [--repeat N] [--clients 1,16,64]
       [--write-ratios 0,0.5,1] [--read-leases] [--busy-poll-us US]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pbkv.bench.backends import backend_factory
from pbkv.bench.cpu import GENERATOR, CpuMeter
from pbkv.bench.loadgen import LoadResult, LoadSpec, run_load
from pbkv.bench.suite import Systems
from pbkv.cluster.processes import ProcessGroup, free_port
from pbkv.runtime.busy_poll import BUSY_POLL_US_MAX

FLOORS = ("floor-batched", "floor-immediate")
CPU_PER_OP: list[tuple[int, float, str, dict[str, float]]] = []


class FloorPair(ProcessGroup):
    """The floor server's replica and one primary per flush mode."""

    def __init__(self, busy_poll_us: int) -> None:
        super().__init__("pbkv-floor-")
        self.busy_poll = ("--busy-poll-us", str(busy_poll_us)) if busy_poll_us else ()
        self.addresses: dict[str, str] = {}
        self.pids: dict[str, dict[str, int]] = {}

    def start(self) -> FloorPair:
        directory = self.make_directory()
        module = [sys.executable, "-m", "pbkv.bench.floor_server", *self.busy_poll]
        for name in FLOORS:
            replica, primary = free_port(), free_port()
            log = directory / f"{name}-replica.log"
            backup_pid = self.spawn([*module, "replica", str(replica)], log).pid
            time.sleep(0.5)
            flush = name.removeprefix("floor-")
            argv = [*module, "primary", str(primary), "--replica", f"127.0.0.1:{replica}"]
            log = directory / f"{name}-primary.log"
            primary_pid = self.spawn([*argv, "--flush", flush], log).pid
            self.addresses[name] = f"127.0.0.1:{primary}"
            self.pids[name] = {"primary": primary_pid, "backup": backup_pid}
        time.sleep(1.0)
        if (gone := self.exited()) is not None:
            raise RuntimeError(f"a floor server exited: {gone.args!r}; logs in {directory}")
        return self


def measure(
    address: str, backend: str, spec: LoadSpec, repeat: int, pids: dict[str, int]
) -> tuple[LoadResult, dict[str, float]]:
    """The median-throughput run of ``repeat``, and the CPU microseconds per operation of the
    primary, the backup and the generator in it."""
    runs = []
    for _ in range(repeat):
        meter = CpuMeter(pids)
        meter.start()
        result = run_load(spec, backend_factory(backend, address), backend)
        usage = meter.stop()
        per_op = {
            name: usage[name] / 100.0 * 1e6 / max(result.ops_per_s, 1e-9)
            for name in (*pids, GENERATOR)
            if name in usage
        }
        runs.append((result, per_op))
    runs.sort(key=lambda run: run[0].ops_per_s)
    return runs[len(runs) // 2]


@contextmanager
def systems(read_leases: bool, busy_poll_us: int) -> Iterator[tuple[Systems, FloorPair]]:
    both = Systems(read_leases=read_leases, busy_poll_us=busy_poll_us)
    with both, FloorPair(busy_poll_us) as floors:
        yield both, floors


def cell(
    both: Systems, floors: FloorPair, spec: LoadSpec, repeat: int, turn: int
) -> dict[str, LoadResult]:
    names = ["redis", *FLOORS, "pbkv"]
    names = names[turn % len(names) :] + names[: turn % len(names)]
    results = {}
    for name in names:
        if name in ("pbkv", "redis"):
            address, pids = both.target(name)
        else:
            address, pids = floors.addresses[name], floors.pids[name]
        backend = "pbkv" if name == "pbkv" else "redis"
        # pbkv's client needs two generator processes above one client, as in the suite.
        procs = 2 if name == "pbkv" and spec.clients > 1 else 1
        run_spec = dataclasses.replace(spec, procs=procs)
        result, per_op = measure(address, backend, run_spec, repeat, pids)
        results[name] = result
        CPU_PER_OP.append((spec.clients, spec.write_ratio, name, per_op))
        cpu = "  ".join(f"{role} {micros:.0f}" for role, micros in per_op.items())
        print(
            f"  {name:>15} {spec.clients:>3} clients w={spec.write_ratio:<4g}"
            f" {result.ops_per_s:>9,.0f} ops/s p50 {result.latency.p50_ns / 1e6:.3f} ms"
            f"  CPU us/op: {cpu}",
            file=sys.stderr,
            flush=True,
        )
    return results


def row(spec: LoadSpec, results: dict[str, LoadResult]) -> str:
    ops = {name: result.ops_per_s for name, result in results.items()}
    p50 = {name: result.latency.p50_ns / 1e6 for name, result in results.items()}
    best = max(FLOORS, key=lambda name: ops[name])
    cells = [f"{spec.clients}", f"{spec.write_ratio:g}"]
    cells += [f"{ops[name]:,.0f} / {p50[name]:.3f}" for name in ("redis", *FLOORS, "pbkv")]
    cells += [f"{ops[best] / ops['redis']:.2f}x", f"{p50[best] / p50['redis']:.2f}x"]
    cells += [f"{ops['pbkv'] / ops[best]:.2f}x", f"{ops['pbkv'] / ops['redis']:.2f}x"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--write-ratios", default="0,0.5,1")
    parser.add_argument("--read-leases", action="store_true")
    parser.add_argument(
        "--busy-poll-us",
        type=int,
        default=0,
        metavar="US",
        help="pbkv's servers and the floor's both busy-poll US µs after each input",
    )
    arguments = parser.parse_args()
    base = LoadSpec(duration_s=arguments.duration, warmup_s=0.5)
    header = (
        "| clients | writes | Redis ops/s / p50 ms | floor, batched | floor, immediate "
        "| pbkv | floor/Redis ops/s | floor/Redis p50 | pbkv/floor ops/s | pbkv/Redis ops/s |"
    )
    lines = [header, "|" + "---|" * 10]
    if not 0 <= arguments.busy_poll_us <= BUSY_POLL_US_MAX:
        parser.error(f"--busy-poll-us must be 0..{BUSY_POLL_US_MAX}")
    with systems(arguments.read_leases, arguments.busy_poll_us) as (both, floors):
        turn = 0
        for clients in map(int, arguments.clients.split(",")):
            for ratio in map(float, arguments.write_ratios.split(",")):
                spec = dataclasses.replace(base, clients=clients, write_ratio=ratio)
                lines.append(row(spec, cell(both, floors, spec, arguments.repeat, turn)))
                turn += 1
    print("\n".join(lines))
    print()
    print("| clients | writes | system | CPU us per operation: primary / backup / generator |")
    print("|---|---|---|---|")
    for clients, ratio, name, per_op in CPU_PER_OP:
        roles = ("primary", "backup", GENERATOR)
        cpu = " / ".join(f"{per_op[role]:.0f}" if role in per_op else "-" for role in roles)
        print(f"| {clients} | {ratio:g} | {name} | {cpu} |")
    leases = "on" if arguments.read_leases else "off"
    print(
        f"(pbkv read leases {leases}; busy polling {arguments.busy_poll_us} µs; "
        f"{arguments.duration:g} s per run, median of "
        f"{arguments.repeat}; floor = the better of the two flush modes; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
    )


if __name__ == "__main__":
    main()
