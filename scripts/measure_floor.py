"""The Python floor: docs/performance.md, "The Python floor".

Runs side by side, in one process tree on loopback and with the same closed-loop generator:
Redis primary + replica (``SET`` + ``WAIT 1 0`` / ``GET``), the floor server of
``pbkv.bench.floor_server`` (a primary-backup store in Python that does nothing but parse,
store, forward and acknowledge; forwards batched per loop iteration, and sent at once), and
pbkv (view service + 2 servers; with ``--read-leases`` its reads are leased like the floor's).
Each cell is the median of REPEAT runs, systems in rotating order. Prints one markdown table:
throughput and p50 of each, floor/Redis (the best a Python implementation of the design reaches
here) and pbkv/floor (how close pbkv comes to it).

Usage: python scripts/measure_floor.py [--duration S] [--repeat N] [--clients 1,16,64]
       [--write-ratios 0,0.5,1] [--read-leases]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pbkv.bench.backends import backend_factory
from pbkv.bench.loadgen import LoadResult, LoadSpec, run_load
from pbkv.bench.suite import Systems
from pbkv.cluster.processes import ProcessGroup, free_port

FLOORS = ("floor-batched", "floor-immediate")


class FloorPair(ProcessGroup):
    """The floor server's replica and one primary per flush mode."""

    def __init__(self) -> None:
        super().__init__("pbkv-floor-")
        self.addresses: dict[str, str] = {}

    def start(self) -> FloorPair:
        directory = self.make_directory()
        module = [sys.executable, "-m", "pbkv.bench.floor_server"]
        for name in FLOORS:
            replica, primary = free_port(), free_port()
            self.spawn([*module, "replica", str(replica)], directory / f"{name}-replica.log")
            time.sleep(0.5)
            flush = name.removeprefix("floor-")
            argv = [*module, "primary", str(primary), "--replica", f"127.0.0.1:{replica}"]
            self.spawn([*argv, "--flush", flush], directory / f"{name}-primary.log")
            self.addresses[name] = f"127.0.0.1:{primary}"
        time.sleep(1.0)
        if (gone := self.exited()) is not None:
            raise RuntimeError(f"a floor server exited: {gone.args!r}; logs in {directory}")
        return self


def measure(address: str, backend: str, spec: LoadSpec, repeat: int) -> LoadResult:
    runs = sorted(
        (run_load(spec, backend_factory(backend, address), backend) for _ in range(repeat)),
        key=lambda result: result.ops_per_s,
    )
    return runs[len(runs) // 2]


@contextmanager
def systems(read_leases: bool) -> Iterator[tuple[Systems, FloorPair]]:
    with Systems(read_leases=read_leases) as both, FloorPair() as floors:
        yield both, floors


def cell(
    both: Systems, floors: FloorPair, spec: LoadSpec, repeat: int, turn: int
) -> dict[str, LoadResult]:
    names = ["redis", *FLOORS, "pbkv"]
    names = names[turn % len(names) :] + names[: turn % len(names)]
    results = {}
    for name in names:
        if name == "pbkv":
            address, backend = both.target("pbkv")[0], "pbkv"
            procs = 1 if spec.clients == 1 else 2  # pbkv's client needs two, as in the suite
        else:
            address = both.redis.primary_address if name == "redis" else floors.addresses[name]
            backend, procs = "redis", 1
        results[name] = measure(address, backend, dataclasses.replace(spec, procs=procs), repeat)
        result = results[name]
        print(
            f"  {name:>15} {spec.clients:>3} clients w={spec.write_ratio:<4g}"
            f" {result.ops_per_s:>9,.0f} ops/s p50 {result.latency.p50_ns / 1e6:.3f} ms",
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
    arguments = parser.parse_args()
    base = LoadSpec(duration_s=arguments.duration, warmup_s=0.5)
    header = (
        "| clients | writes | Redis ops/s / p50 ms | floor, batched | floor, immediate "
        "| pbkv | floor/Redis ops/s | floor/Redis p50 | pbkv/floor ops/s | pbkv/Redis ops/s |"
    )
    lines = [header, "|" + "---|" * 10]
    with systems(arguments.read_leases) as (both, floors):
        turn = 0
        for clients in map(int, arguments.clients.split(",")):
            for ratio in map(float, arguments.write_ratios.split(",")):
                spec = dataclasses.replace(base, clients=clients, write_ratio=ratio)
                lines.append(row(spec, cell(both, floors, spec, arguments.repeat, turn)))
                turn += 1
    print("\n".join(lines))
    leases = "on" if arguments.read_leases else "off"
    print(
        f"(pbkv read leases {leases}; {arguments.duration:g} s per run, median of "
        f"{arguments.repeat}; floor = the better of the two flush modes; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
    )


if __name__ == "__main__":
    main()
