"""Memory of a pbkv server holding many keys (issue #5: 1,000,000 x 64-byte values < 400 MB RSS).

Starts a local cluster (view service, primary, backup), writes ``--keys`` keys of
``--value-size`` bytes through ``pbkv.AsyncClient`` (``--clients`` clients with ``--window``
operations in flight each), then reads ``VmRSS`` and ``VmHWM`` (peak) of the primary and the
backup from ``/proc/PID/status``, before and after. With ``--redis`` it does the same for a
Redis primary and replica (pipelined ``SET``), for comparison. Everything started is stopped.

Usage::

    .venv/bin/python scripts/measure_memory.py --keys 1000000 --value-size 64 [--redis] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

from pbkv.bench.loadgen import make_keys, make_value, run_with_loop
from pbkv.bench.local_cluster import LocalCluster
from pbkv.bench.redis_pair import RedisPair
from pbkv.bench.resp import RespConnection, encode_command

RSS_TARGET_MB: Final = 400.0
KIB_PER_MB: Final = 1024.0
REDIS_PIPELINE_DEPTH: Final = 1000


def memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in MiB."""
    figures: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                figures[name] = int(value.split()[0]) / KIB_PER_MB
    return figures


async def load_pbkv(
    viewserver: str, keys: list[str], value: str, clients: int, window: int
) -> None:
    from pbkv import AsyncClient

    async def one_client(share: list[str]) -> None:
        async with AsyncClient(viewserver, timeout=60.0) as client:
            for start in range(0, len(share), window):
                await asyncio.gather(
                    *(client.put(key, value) for key in share[start : start + window])
                )

    await asyncio.gather(*(one_client(keys[index::clients]) for index in range(clients)))


async def load_redis(address: str, keys: list[str], value: str) -> None:
    host, _, port = address.rpartition(":")
    connection = await RespConnection.open(host, int(port))
    try:
        for start in range(0, len(keys), REDIS_PIPELINE_DEPTH):
            batch = keys[start : start + REDIS_PIPELINE_DEPTH]
            payload = b"".join(encode_command(("SET", key, value)) for key in batch)
            await connection.request(payload, len(batch))
        await connection.execute("WAIT", "1", "0")
    finally:
        await connection.close()


def measure_pbkv(keys: list[str], value: str, clients: int, window: int) -> dict[str, Any]:
    with LocalCluster() as cluster:
        view = cluster.view()
        assert view is not None and view.primary is not None and view.backup is not None
        pids = {"primary": cluster.node_at(view.primary), "backup": cluster.node_at(view.backup)}
        before = {role: memory_mb(node.pid) for role, node in pids.items() if node is not None}
        started = time.monotonic()
        run_with_loop(load_pbkv(cluster.viewserver, keys, value, clients, window))
        load_s = time.monotonic() - started
        time.sleep(0.5)  # let the backup apply the last forwards
        after = {role: memory_mb(node.pid) for role, node in pids.items() if node is not None}
    return {"system": "pbkv", "load_s": load_s, "before": before, "after": after}


def measure_redis(keys: list[str], value: str) -> dict[str, Any]:
    with RedisPair() as pair:
        pids = {"primary": pair.primary_pid, "backup": pair.replica_pid}
        before = {role: memory_mb(pid) for role, pid in pids.items()}
        started = time.monotonic()
        run_with_loop(load_redis(pair.primary_address, keys, value))
        load_s = time.monotonic() - started
        after = {role: memory_mb(pid) for role, pid in pids.items()}
    return {"system": "redis", "load_s": load_s, "before": before, "after": after}


def render(report: dict[str, Any], key_count: int) -> str:
    lines = [f"{report['system']}: {key_count:,} keys loaded in {report['load_s']:.1f} s"]
    for role, after in report["after"].items():
        before = report["before"][role]
        grown = after["VmRSS"] - before["VmRSS"]
        per_key = grown * KIB_PER_MB * 1024 / key_count
        lines.append(
            f"  {role:<8} RSS {after['VmRSS']:8.1f} MiB (peak {after['VmHWM']:.1f}; "
            f"{before['VmRSS']:.1f} empty; {per_key:.0f} bytes per key)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=64)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--window", type=int, default=512, help="puts in flight per client")
    parser.add_argument("--redis", action="store_true", help="measure Redis too")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args(argv)
    keys = make_keys(arguments.keys)
    value = make_value(arguments.value_size, seed=1)
    reports = [measure_pbkv(keys, value, arguments.clients, arguments.window)]
    if arguments.redis:
        reports.append(measure_redis(keys, value))
    if arguments.json:
        print(json.dumps(reports, indent=2))
    else:
        for report in reports:
            print(render(report, arguments.keys))
    primary_rss = reports[0]["after"]["primary"]["VmRSS"]
    verdict = "met" if primary_rss < RSS_TARGET_MB else "NOT met"
    print(f"target: pbkv primary < {RSS_TARGET_MB:.0f} MB RSS: {verdict}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
