#!/usr/bin/env python3
"""Measure failover time: kill -9 of the primary to the first successful write.

Each run starts a fresh local cluster (``python -m pbkv viewserver`` and servers, default
timing unless told otherwise), writes a little, kills the primary with SIGKILL and, right after,
starts a ``put`` with the public client; the time from the kill to that put's success is the
failover time. Prints every run and the median.

    .venv/bin/python scripts/measure_failover.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pbkv

LISTENING = re.compile(r" listening address=(\S+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(kind: str, args: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with open(log, "ab") as stream:
        command = [sys.executable, "-m", "pbkv", kind, *args]
        process = subprocess.Popen(command, stderr=stream, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        match = LISTENING.search(log.read_text())
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"{kind} exited: {log.read_text()}")
        time.sleep(0.02)
    raise RuntimeError(f"{kind} did not start: {log.read_text()}")


def wait_view(kv: pbkv.Client, servers: int) -> pbkv.View:
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        view = kv.view()
        if view.primary is not None and (servers < 2 or view.backup is not None):
            kv.put("ready", "yes")  # served: the view is acknowledged and the backup synced
            return view
        time.sleep(0.05)
    raise RuntimeError("no stable view")


def one_run(directory: Path, ping_interval: float, dead_pings: int, servers: int) -> float:
    timing = ["--ping-interval", str(ping_interval)]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    vs_args = ["--listen", f"127.0.0.1:{free_port()}", *timing, "--dead-pings", str(dead_pings)]
    vs_process, vs = start(
        "viewserver",
        [*vs_args, "--data-dir", str(directory / "viewserver.data")],
        directory / "viewserver.log",
    )
    try:
        for index in range(servers):
            args = ["--listen", f"127.0.0.1:{free_port()}", "--viewserver", vs, *timing]
            process, name = start("server", args, directory / f"server{index}.log")
            processes[name] = process
            time.sleep(0.2)
        with pbkv.Client(vs, timeout=30.0) as kv:
            view = wait_view(kv, servers)
            for i in range(100):
                kv.put(f"k{i}", str(i))
            assert view.primary is not None
            killed_at = time.monotonic()
            os.kill(processes[view.primary].pid, signal.SIGKILL)
            kv.put("after-failover", "yes")
            elapsed = time.monotonic() - killed_at
            assert kv.get("k99") == "99"
            return elapsed
    finally:
        for process in [*processes.values(), vs_process]:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ping-interval", type=float, default=0.1)
    parser.add_argument("--dead-pings", type=int, default=5)
    parser.add_argument("--servers", type=int, default=2, help="2, or 3 with an idle spare")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    options = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="pbkv-failover-") as root:
        for run in range(options.runs):
            directory = Path(root) / f"run{run}"
            directory.mkdir()
            seconds = one_run(directory, options.ping_interval, options.dead_pings, options.servers)
            results.append(seconds)
            if not options.json:
                print(f"run {run + 1}: kill -9 of the primary to first write {seconds:.3f} s")
    median = statistics.median(results)
    dead = options.ping_interval * options.dead_pings
    if options.json:
        print(json.dumps({"runs_s": results, "median_s": median, "dead_interval_s": dead}))
    else:
        print(f"median {median:.3f} s over {len(results)} runs (dead interval {dead:.2f} s)")


if __name__ == "__main__":
    main()
