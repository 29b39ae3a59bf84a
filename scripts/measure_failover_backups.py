"""Failover with K backups (docs/performance.md, "K backups"): kill -9 the primary 2 s into a
4 s window of 4 clients at 50 % writes, RUNS times; the killed server is restarted (empty, it
rejoins) between runs. Prints each run and the median time until operations resumed.

Usage: python scripts/measure_failover_backups.py [BACKUPS [RUNS]]   (defaults 2 and 5)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PBKV = [sys.executable, "-m", "pbkv"]


def restart_the_dead(directory: Path) -> None:
    state = json.loads((directory / "cluster.json").read_text())
    for process in state["processes"]:
        if process["kind"] != "server":
            continue
        try:
            os.kill(process["pid"], 0)
        except ProcessLookupError:
            subprocess.run([*PBKV, "cluster", "restart", process["name"], "--dir", str(directory)],
                           capture_output=True, check=False)  # fmt: skip


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "backups", nargs="?", type=int, default=2, choices=range(1, 5), metavar="BACKUPS",
        help="K, backups per view (1..4; default 2)",
    )  # fmt: skip
    parser.add_argument(
        "runs", nargs="?", type=int, default=5, metavar="RUNS", help="kills to measure (default 5)"
    )
    arguments = parser.parse_args()
    if arguments.runs < 1:
        parser.error("RUNS must be at least 1")
    return arguments


def one_run(directory: Path) -> dict[str, float]:
    """One bench run with its kill; SystemExit with pbkv's own error line if it failed."""
    bench = [*PBKV, "bench", "--cluster-dir", str(directory), "--kill-primary-at", "2"]
    bench += ["--duration", "4", "--clients", "4", "--write-ratio", "0.5", "--json"]
    ran = subprocess.run(bench, check=False, capture_output=True, text=True)
    try:
        result: dict[str, float] = json.loads(ran.stdout)
    except json.JSONDecodeError:
        reason = (ran.stderr.strip().splitlines() or [f"exit {ran.returncode}"])[-1]
        raise SystemExit(f"measure_failover_backups: pbkv bench failed: {reason}") from None
    return result


def main() -> None:
    arguments = parse_arguments()
    backups, runs = arguments.backups, arguments.runs
    directory = Path(tempfile.mkdtemp(prefix="pbkv-failover-")) / "cluster"
    up = [*PBKV, "cluster", "up", "--dir", str(directory), "--servers", str(backups + 2)]
    started = subprocess.run([*up, "--backups", str(backups), "--base-port", "0"],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if started.returncode != 0:
        reason = (started.stderr.strip().splitlines() or [f"exit {started.returncode}"])[-1]
        raise SystemExit(f"measure_failover_backups: pbkv cluster up failed: {reason}")
    gaps = []
    try:
        for index in range(runs):
            result = one_run(directory)
            gaps.append(result["resumed_after_kill_ms"])
            print(f"run {index + 1}: resumed {result['resumed_after_kill_ms']:.0f} ms after the "
                  f"kill, {result['errors']} errors, {result['ops']} ops", flush=True)  # fmt: skip
            restart_the_dead(directory)
            time.sleep(3)
        print(f"K={backups}: median {statistics.median(gaps):.0f} ms over {runs} runs")
    finally:
        down = [*PBKV, "cluster", "down", "--dir", str(directory)]
        subprocess.run(down, check=False, capture_output=True)


if __name__ == "__main__":
    main()
