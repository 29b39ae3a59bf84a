"""The Python floor: docs/performance.md, "The Python floor".

Runs side by side, in one process tree on loopback and with the same closed-loop generator:
Redis primary + replica (``SET`` + ``WAIT 1 0`` / ``GET``), the floor server of
``pbkv.bench.floor_server`` (a primary-backup store in Python that does nothing but parse,
store, forward and acknowledge; forwards batched per loop iteration, and sent at once), and
pbkv (view service + 2 servers). Reads are alike on both: with ``--read-leases`` pbkv's are
leased and the floor answers a ``GET`` at once; without, pbkv confirms each read with a read
round and the floor too (``--reads confirmed``: answered after the replica acknowledged a later
forward).
Each cell is the median of REPEAT runs, systems in rotating order. Prints one markdown table:
throughput and p50 of each, floor/Redis (the best a Python implementation of the design reaches
here) and pbkv/floor (how close pbkv comes to it), then the CPU microseconds per operation of
each process (user + system), which says where the difference goes.

With ``--backups 2`` it compares the two ways of reaching two replicas instead (issue #11,
docs/performance.md "Fan-out or chain"): Redis with two replicas (``WAIT 2 0``), the floor
fanning out to two replicas and the floor as a chain of two (both forwarding once per loop
iteration), and pbkv with ``viewserver --backups 2`` (fan-out).

Usage: python scripts/measure_floor.py [--duration S] [--repeat N] [--clients 1,16,64]
       [--write-ratios 0,0.5,1] [--read-leases] [--busy-poll-us US] [--backups 2]
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
from pbkv.bench.suite import PROCS_HIGH_DEFAULT, Systems, backup_role, generator_processes
from pbkv.cluster.processes import ProcessGroup, free_port
from pbkv.runtime.busy_poll import BUSY_POLL_US_MAX

FLOORS_BY_BACKUPS = {1: ("floor-batched", "floor-immediate"), 2: ("floor-fanout", "floor-chain")}
CPU_PER_OP: list[tuple[int, float, str, dict[str, float]]] = []


class FloorPair(ProcessGroup):
    """The floor server's replica and one primary per flush mode; with two backups, a fan-out
    and a chain, each forwarding once per loop iteration."""

    def __init__(self, busy_poll_us: int, backups: int = 1, reads: str = "leased") -> None:
        super().__init__("pbkv-floor-")
        self.busy_poll = ("--busy-poll-us", str(busy_poll_us)) if busy_poll_us else ()
        self.reads = reads
        self.backups = backups
        self.addresses: dict[str, str] = {}
        self.pids: dict[str, dict[str, int]] = {}
        self.module = [sys.executable, "-m", "pbkv.bench.floor_server", *self.busy_poll]

    def start(self) -> FloorPair:
        for name in FLOORS_BY_BACKUPS[self.backups]:
            replicas, pids = self.start_replicas(name)
            primary = free_port()
            argv = [*self.module, "primary", str(primary)]
            for port in replicas:
                argv += ["--replica", f"127.0.0.1:{port}"]
            flush = "immediate" if name == "floor-immediate" else "batched"
            log = self.make_directory() / f"{name}-primary.log"
            argv += ["--flush", flush, "--reads", self.reads]
            pids["primary"] = self.spawn(argv, log).pid
            self.addresses[name] = f"127.0.0.1:{primary}"
            self.pids[name] = pids
        time.sleep(1.0)
        if (gone := self.exited()) is not None:
            raise RuntimeError(f"a floor server exited: {gone.args!r}; logs in {self.directory}")
        return self

    def start_replicas(self, name: str) -> tuple[list[int], dict[str, int]]:
        """The replicas of floor ``name``, the tail first (a chain member connects to its
        successor when it starts); the ports the primary forwards to, and the pids by role
        (``backup``, ``backup2``)."""
        directory = self.make_directory()
        ports: list[int] = []
        pids: dict[str, int] = {}
        successor = ""
        for index in range(self.backups - 1, -1, -1):
            role = backup_role(index)
            port = free_port()
            argv = [*self.module, "replica", str(port)]
            if successor:
                argv += ["--next", successor]
            pids[role] = self.spawn(argv, directory / f"{name}-{role}.log").pid
            ports.insert(0, port)
            if name == "floor-chain":
                successor = f"127.0.0.1:{port}"
            time.sleep(0.5)
        return (ports[:1] if name == "floor-chain" else ports), pids


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
def systems(
    read_leases: bool, busy_poll_us: int, backups: int
) -> Iterator[tuple[Systems, FloorPair]]:
    both = Systems(read_leases=read_leases, busy_poll_us=busy_poll_us, backups=backups)
    reads = "leased" if read_leases else "confirmed"
    with both, FloorPair(busy_poll_us, backups, reads) as floors:
        yield both, floors


def cell(
    both: Systems, floors: FloorPair, spec: LoadSpec, repeat: int, turn: int
) -> dict[str, LoadResult]:
    names = ["redis", *FLOORS_BY_BACKUPS[floors.backups], "pbkv"]
    names = names[turn % len(names) :] + names[: turn % len(names)]
    results = {}
    for name in names:
        if name in ("pbkv", "redis"):
            address, pids = both.target(name)
        else:
            address, pids = floors.addresses[name], floors.pids[name]
        backend = "pbkv" if name == "pbkv" else "redis"
        # The suite's rule: RESP generators one process, pbkv's as it measured fastest.
        leased = floors.reads == "leased"
        procs = generator_processes(
            backend, spec.clients, spec.write_ratio, leased, PROCS_HIGH_DEFAULT
        )
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


def row(spec: LoadSpec, results: dict[str, LoadResult], floors: tuple[str, ...]) -> str:
    ops = {name: result.ops_per_s for name, result in results.items()}
    p50 = {name: result.latency.p50_ns / 1e6 for name, result in results.items()}
    best = max(floors, key=lambda name: ops[name])
    cells = [f"{spec.clients}", f"{spec.write_ratio:g}"]
    cells += [f"{ops[name]:,.0f} / {p50[name]:.3f}" for name in ("redis", *floors, "pbkv")]
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
    parser.add_argument(
        "--backups",
        type=int,
        choices=sorted(FLOORS_BY_BACKUPS),
        default=1,
        help="2: two replicas everywhere; the floor fans out and chains",
    )
    arguments = parser.parse_args()
    if not 0 <= arguments.busy_poll_us <= BUSY_POLL_US_MAX:
        parser.error(f"--busy-poll-us must be 0..{BUSY_POLL_US_MAX}")
    floors = FLOORS_BY_BACKUPS[arguments.backups]
    lines = [header(floors), "|" + "---|" * 10]
    base = LoadSpec(duration_s=arguments.duration, warmup_s=0.5)
    with systems(arguments.read_leases, arguments.busy_poll_us, arguments.backups) as pair:
        both, floor_servers = pair
        turn = 0
        for clients in map(int, arguments.clients.split(",")):
            for ratio in map(float, arguments.write_ratios.split(",")):
                spec = dataclasses.replace(base, clients=clients, write_ratio=ratio)
                results = cell(both, floor_servers, spec, arguments.repeat, turn)
                lines.append(row(spec, results, floors))
                turn += 1
    print("\n".join(lines))
    print()
    print_cpu_table(arguments.backups)
    leases = "on" if arguments.read_leases else "off (reads confirmed by the floor too)"
    print(
        f"(pbkv read leases {leases}; busy polling {arguments.busy_poll_us} µs; "
        f"{arguments.backups} backup(s); {arguments.duration:g} s per run, median of "
        f"{arguments.repeat}; floor = the better of {' and '.join(floors)}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
    )


def header(floors: tuple[str, ...]) -> str:
    columns = " | ".join(name.replace("floor-", "floor, ") for name in floors)
    return (
        f"| clients | writes | Redis ops/s / p50 ms | {columns} "
        "| pbkv | floor/Redis ops/s | floor/Redis p50 | pbkv/floor ops/s | pbkv/Redis ops/s |"
    )


def print_cpu_table(backups: int) -> None:
    roles = ("primary", *(backup_role(index) for index in range(backups)), GENERATOR)
    print(f"| clients | writes | system | CPU us per operation: {' / '.join(roles)} |")
    print("|---|---|---|---|")
    for clients, ratio, name, per_op in CPU_PER_OP:
        cpu = " / ".join(f"{per_op[role]:.0f}" if role in per_op else "-" for role in roles)
        print(f"| {clients} | {ratio:g} | {name} | {cpu} |")


if __name__ == "__main__":
    main()
