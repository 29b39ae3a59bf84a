"""Benchmark the linearizability checker on a simulated, linearizable key-value history.

Theory of operation: a seeded simulation of a correct store. Each client is sequential: it
thinks for a random time, invokes an operation on a random key, and the operation returns after
a random duration; its effect on the (register-per-key) store happens at a uniformly random
instant inside that interval, so the recorded history is linearizable by construction while
operations of different clients overlap. A small fraction of operations never return
(indeterminate): the client gives up after a timeout and moves on, and the operation takes
effect at a random instant after its invoke - or, half the time, never. Writes carry unique
values. Get results come from ``replay_effects`` (all effects in effect-time order).

``--inject`` then plants one violation near the end, to time how fast it is found and explained:
``stale-read`` makes a late get return a value overwritten long before (the last-writer pass
proves it), ``duplicate-append`` makes a late get return its value with the last append doubled
(only the exhaustive search can refute it).

Usage::

    PYTHONPATH=src .venv/bin/python scripts/bench_checker.py --ops 10000 --clients 10 --keys 5
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import random
import time

from pbkv.check import Operation, check_history, format_result
from pbkv.check.history import OpKind, replay_effects

KIND_WEIGHTS: dict[OpKind, int] = {"put": 35, "append": 25, "get": 37, "delete": 3}
TIMEOUT_UNITS = 20.0


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    ops: int
    clients: int
    keys: int
    seed: int
    indeterminate_rate: float
    mean_think: float
    max_duration: float


def simulate(settings: Settings) -> list[Operation]:
    """A linearizable history of ``settings.ops`` operations (see the module docstring)."""
    rng = random.Random(settings.seed)
    kinds = list(KIND_WEIGHTS)
    weights = list(KIND_WEIGHTS.values())
    cursors = [(rng.uniform(0.0, 1.0), f"c{n}") for n in range(settings.clients)]
    heapq.heapify(cursors)
    planned: list[tuple[Operation, float | None]] = []  # (op without result, effect time)
    for serial in range(settings.ops):
        now, client = heapq.heappop(cursors)
        invoke = now + rng.expovariate(1.0 / settings.mean_think)
        kind = rng.choices(kinds, weights)[0]
        key = f"k{rng.randrange(settings.keys)}"
        value = f"{client}.{serial};" if kind in ("put", "append") else None
        duration = rng.uniform(0.1, settings.max_duration)
        if rng.random() < settings.indeterminate_rate:
            effect = invoke + rng.uniform(0.0, 2 * TIMEOUT_UNITS) if rng.random() < 0.5 else None
            planned.append((Operation(client, kind, key, value, invoke, None, None), effect))
            heapq.heappush(cursors, (invoke + TIMEOUT_UNITS, client))
            continue
        effect = rng.uniform(invoke, invoke + duration)
        op = Operation(client, kind, key, value, invoke, invoke + duration, None)
        planned.append((op, effect))
        heapq.heappush(cursors, (invoke + duration, client))
    return replay_effects(planned)


def inject_stale_read(ops: list[Operation]) -> list[Operation]:
    """Make the last completed get on some key return that key's first put value."""
    for index in range(len(ops) - 1, -1, -1):
        get = ops[index]
        if get.op != "get" or get.complete is None:
            continue
        first = next((op for op in ops if op.key == get.key and op.op == "put"), None)
        if first is not None and first.value != get.result:
            return [*ops[:index], dataclasses.replace(get, result=first.value), *ops[index + 1 :]]
    raise SystemExit("no get to corrupt")


def inject_duplicate_append(ops: list[Operation]) -> list[Operation]:
    """Make the last get that saw an append see that append twice."""
    appended = {op.value for op in ops if op.op == "append"}
    for index in range(len(ops) - 1, -1, -1):
        get = ops[index]
        if get.op != "get" or get.complete is None or not get.result:
            continue
        last = get.result.split(";")[-2] + ";" if ";" in get.result else ""
        if last in appended:
            doubled = dataclasses.replace(get, result=get.result + last)
            return [*ops[:index], doubled, *ops[index + 1 :]]
    raise SystemExit("no get to corrupt")


INJECTIONS = {"stale-read": inject_stale_read, "duplicate-append": inject_duplicate_append}


def main() -> None:
    """Parse flags, simulate, check, print one summary line (plus the report on request).

    ``elapsed_s`` is wall time (what the budget counts); ``cpu_s`` is this process's CPU time,
    the steadier figure on a busy machine.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--indeterminate-rate", type=float, default=0.005)
    parser.add_argument("--mean-think", type=float, default=1.0, help="time units")
    parser.add_argument("--max-duration", type=float, default=10.0, help="time units")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds")
    parser.add_argument("--inject", choices=sorted(INJECTIONS), help="plant one violation")
    parser.add_argument("--report", action="store_true", help="print the full report")
    args = parser.parse_args()
    settings = Settings(
        args.ops,
        args.clients,
        args.keys,
        args.seed,
        args.indeterminate_rate,
        args.mean_think,
        args.max_duration,
    )
    history = simulate(settings)
    if args.inject:
        history = INJECTIONS[args.inject](history)
    pending = sum(1 for op in history if op.complete is None)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = check_history(history, budget_s=args.budget)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(
        f"ops={len(history)} keys={result.keys_total} clients={args.clients} "
        f"indeterminate={pending} seed={args.seed} verdict={result.verdict} "
        f"elapsed_s={elapsed:.3f} cpu_s={cpu:.3f}"
    )
    if args.report:
        print(format_result(result))


if __name__ == "__main__":
    main()
