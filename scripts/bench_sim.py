"""Benchmark the simulator: message deliveries per second on one core, and the end-to-end check.

Three measurements, each on one core (this process only):

1. ``load``: a three-server cluster with ``--clients`` sessions that each keep one operation in
   flight back to back on ``--keys`` keys, on a lossy, duplicating, reordering network, for
   ``--ticks`` ticks. Reports deliveries per second of wall time, everything included (encode
   and decode through ``pbkv.wire``, the core handlers, ticks, the per-step safety checks).
2. ``sweep``: ``--seeds`` ordinary randomized runs (``run_simulation``), reporting seconds per
   run and deliveries per second of simulation time (checker excluded).
3. ``history``: the load cluster run until ``--history-ops`` operations completed, then
   ``check_history`` on that history, timed (the issue's 10,000 operations, 10 clients, 5 keys).

Usage::

    .venv/bin/python scripts/bench_sim.py                  # all three, default sizes
    .venv/bin/python scripts/bench_sim.py --only load --ticks 20000
"""

from __future__ import annotations

import argparse
import random
import time

from pbkv.check import check_history
from pbkv.core.messages import Append, Delete, Get, Operation, Put
from pbkv.sim import NetworkParams, World, make_world, run_simulation


def busy_world(clients: int, keys: int, seed: int) -> tuple[World, list[int]]:
    """A cluster whose clients always have one operation in flight; returns the op counter."""
    network = NetworkParams(
        drop_rate=0.02, duplicate_rate=0.02, delay_min_ticks=1, delay_max_ticks=3
    )
    world = make_world(servers=3, clients=clients, seed=seed, network=network)
    rng = random.Random(seed)
    counter = [0]
    names = [f"k{index}" for index in range(keys)]

    def draw(client: str) -> Operation:
        counter[0] += 1
        key = rng.choice(names)
        roll = rng.random()
        if roll < 0.4:
            return Get(key)
        if roll < 0.7:
            return Put(key, f"{client}.{counter[0]}")
        if roll < 0.97:
            return Append(key, f"<{client}.{counter[0]}>")
        return Delete(key)

    def drive(w: World) -> None:
        for client in w.clients():
            if not w.session(client).in_flight:
                w.submit(client, draw(client))

    world.after_tick.append(drive)
    return world, counter


def bench_load(clients: int, keys: int, ticks: int) -> None:
    world, _ = busy_world(clients, keys, seed=1)
    started = time.perf_counter()
    world.run(ticks)
    elapsed = time.perf_counter() - started
    deliveries = world.stats.deliveries
    print(
        f"load: {clients} clients, {keys} keys, {ticks} ticks: {deliveries} deliveries in "
        f"{elapsed:.2f} s = {deliveries / elapsed:,.0f} deliveries/s "
        f"({ticks / elapsed:,.0f} ticks/s, {len(world.history.records)} operations)"
    )


def bench_sweep(seeds: int) -> None:
    deliveries = 0
    simulated = 0.0
    checked = 0.0
    started = time.perf_counter()
    for seed in range(1, seeds + 1):
        result = run_simulation(seed)
        deliveries += result.stats.deliveries
        simulated += result.stats.elapsed_s - result.stats.check_s
        checked += result.stats.check_s
    elapsed = time.perf_counter() - started
    print(
        f"sweep: {seeds} seeds in {elapsed:.1f} s ({elapsed / seeds * 1000:.0f} ms/seed); "
        f"{deliveries} deliveries at {deliveries / simulated:,.0f}/s of simulation time; "
        f"checker {checked:.1f} s in all"
    )


def bench_history(operations: int, clients: int, keys: int) -> None:
    world, counter = busy_world(clients, keys, seed=2)
    started = time.perf_counter()
    while counter[0] < operations:
        world.tick()
    world.after_tick.clear()
    world.run_until(lambda w: not w.history.open, 2000)
    simulated = time.perf_counter() - started
    history = world.history.operations()
    started = time.perf_counter()
    result = check_history(history, budget_s=60.0)
    elapsed = time.perf_counter() - started
    print(
        f"history: {len(history)} operations, {clients} clients, {keys} keys "
        f"(simulated in {simulated:.1f} s): check_history -> {result.verdict} in {elapsed:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("load", "sweep", "history"))
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--ticks", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--history-ops", type=int, default=10_000)
    args = parser.parse_args()
    if args.only in (None, "load"):
        bench_load(args.clients, args.keys, args.ticks)
    if args.only in (None, "sweep"):
        bench_sweep(args.seeds)
    if args.only in (None, "history"):
        bench_history(args.history_ops, args.clients, args.keys)


if __name__ == "__main__":
    main()
