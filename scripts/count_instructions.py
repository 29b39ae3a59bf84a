"""Instructions per operation of the whole request path, counted by valgrind: a measure that
does not move with the machine.

Why: on the shared two-core VM wall-clock and CPU-time measures move by 2x between runs
(docs/performance.md), so a change worth 5 % of an operation's CPU cannot be seen in them, and
``scripts/bench_core_path.py`` leaves out the runtime (sockets, uvloop, framing, the client's
hub and futures), which is most of the cost. This runs everything in one process, on one uvloop
loop, over real loopback sockets: a view service, a primary, a backup and ``--clients``
``AsyncClient``s in closed loops, and counts the instructions the CPU executes (valgrind's
callgrind, which simulates them: the count does not depend on the machine's load). With every
process on one loop the batches are those of a lock-step closed loop, not of three processes on
two cores, but they are the same for both trees of a comparison.

Each measurement is two runs under valgrind, of ``--ops`` and of three times as many
operations; the difference divided by twice ``--ops`` is the count per operation, without the
start (imports, the view forming). Ticks are slowed down (valgrind runs the process about 50x
slower, so at the usual 10 ms a tick would cost per operation 50x what it costs in life).

Usage: ``python scripts/count_instructions.py [--clients 16] [--ops 3000] [--write-ratio 0.5]
[--read-leases] [--python PATH]``; to compare two trees, run it with each tree's ``src`` first on
``PYTHONPATH`` (the compiled build: each tree's own ``.venv-compiled`` python). ``--inner``
runs the load once without valgrind (what each valgrind run executes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from pbkv.client import AsyncClient
from pbkv.core.kv_store import Limits
from pbkv.core.replica import Replica
from pbkv.core.view_service import ViewService
from pbkv.runtime.config import NodeOptions, Timing
from pbkv.runtime.loop import run
from pbkv.runtime.node import Core, NodeHost, serve

INNER_TIMING: dict[str, Any] = {"tick_interval_s": 2.5, "ping_interval_s": 5.0, "dead_pings": 2}
"""Ticks 250x slower than the default: under valgrind the process runs about 50x slower, and a
tick costs per second, not per operation. The first view forms after one dead interval (10 s)."""
KEYS = 1000
VALUE = "v" * 64


async def start(options: NodeOptions, view_service: str | None) -> NodeHost:
    """A view service (``view_service`` None) or a server of it, on this loop, listening."""
    started: asyncio.Future[NodeHost] = asyncio.get_running_loop().create_future()

    def build(name: str) -> Core:
        if view_service is None:
            return ViewService(name, options.timing.view_service_config())
        config = options.timing.replica_config(Limits())
        return Replica(name, view_service, random.Random(), config)

    kind = "viewserver" if view_service is None else "server"
    serving = serve(kind, options, build, view_service, None, started.set_result, False)
    task = asyncio.create_task(serving)
    waiting: list[asyncio.Future[Any]] = [started, task]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        task.result()  # its error
        raise RuntimeError(f"the {kind} stopped at once")
    return started.result()


async def load(clients: int, ops: int, write_ratio: float, timing: Timing) -> int:
    """A view service, two servers and ``clients`` closed loops on this loop; ``ops`` operations
    in all. Returns how many completed (each read checked to show a value some client wrote)."""
    options = NodeOptions(listen="127.0.0.1:0", timing=timing)
    viewserver = await start(options, None)
    address = viewserver.core.name
    servers = [await start(options, address) for _ in range(2)]
    core = viewserver.core
    assert isinstance(core, ViewService)
    while not (core.acknowledged and len(core.view.members()) == 2):
        await asyncio.sleep(0.01)
    sessions = []
    for _ in range(clients):
        client = AsyncClient(address, timeout=600.0)
        client.timing = timing  # the client's ticks slowed down too
        sessions.append(client)
    remaining, completed = [ops], [0]

    async def worker(client: AsyncClient, seed: int) -> None:
        chooser = random.Random(seed)
        await client.put("warm", VALUE)
        while remaining[0] > 0:
            remaining[0] -= 1
            key = f"key{chooser.randrange(KEYS)}"
            if chooser.random() < write_ratio:
                await client.put(key, VALUE)
            elif await client.get(key) not in (None, VALUE):
                raise AssertionError(f"{key}: a value no client wrote")
            completed[0] += 1

    await asyncio.gather(*(worker(client, seed) for seed, client in enumerate(sessions)))
    for client in sessions:
        await client.close()
    for server in servers:  # which read path the run took
        assert isinstance(server.core, Replica)
        counters = server.core.counters
        reads = {name: counters.get(name, 0) for name in ("reads_leased", "reads_by_round")}
        print(f"{server.core.name}: {reads}", file=sys.stderr)
    return completed[0]


def inner(arguments: argparse.Namespace) -> None:
    began = time.process_time()
    timing = Timing(**INNER_TIMING)
    if arguments.read_leases:  # a lease outlasting a ping interval needs ten pings' dead interval
        timing = dataclasses.replace(timing, ping_interval_s=2.5, dead_pings=10, read_leases=True)
    done = run(load(arguments.clients, arguments.ops, arguments.write_ratio, timing))
    print(f"{done} operations, cpu {time.process_time() - began:.2f} s", file=sys.stderr)
    sys.stderr.flush()
    os._exit(0)  # the hosts' tasks end with the process: no shutdown to count


def count(python: str, arguments: argparse.Namespace, ops: int) -> int:
    """Instructions of one ``--inner`` run of ``ops`` operations under callgrind."""
    with tempfile.TemporaryDirectory() as directory:
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={directory}/out",
            python, __file__, "--inner", "--clients", str(arguments.clients),
            "--ops", str(ops), "--write-ratio", str(arguments.write_ratio),
        ] + (["--read-leases"] if arguments.read_leases else [])  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"count_instructions: valgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_operation(small: int, large: int, ops: int) -> float:
    """Instructions per operation from runs of ``ops`` and ``3 * ops`` operations."""
    return (large - small) / (2 * ops)


def positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=positive, default=16)
    parser.add_argument("--ops", type=positive, default=3000, help="of the smaller run")
    parser.add_argument("--write-ratio", type=float, default=0.5)
    parser.add_argument("--python", default=sys.executable, help="interpreter (its build)")
    parser.add_argument(
        "--read-leases", action="store_true", help="the view service grants read leases (R1-R5)"
    )
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    if arguments.inner:
        inner(arguments)
        return
    if shutil.which("valgrind") is None:
        sys.exit("count_instructions: valgrind is not installed (apt-get install valgrind)")
    small = count(arguments.python, arguments, arguments.ops)
    large = count(arguments.python, arguments, 3 * arguments.ops)
    print(
        f"{arguments.clients} clients, write ratio {arguments.write_ratio}"
        f"{', read leases' if arguments.read_leases else ''}: "
        f"{per_operation(small, large, arguments.ops):,.0f} instructions per operation "
        f"({small:,} for {arguments.ops} operations, {large:,} for {3 * arguments.ops})"
    )


if __name__ == "__main__":
    main()
