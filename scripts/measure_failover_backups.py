"""Failover with K backups (docs/performance.md, "K backups"): kill -9 the primary 2 s into a
4 s window of 4 clients at 50 % writes, RUNS times; the killed server is restarted (empty, it
rejoins) between runs. Prints each run and the median time until operations resumed.

Usage: python scripts/measure_failover_backups.py [BACKUPS [RUNS]]   (defaults 2 and 5)
"""

from __future__ import annotations

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


def main() -> None:
    backups = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    directory = Path(tempfile.mkdtemp(prefix="pbkv-failover-")) / "cluster"
    up = [*PBKV, "cluster", "up", "--dir", str(directory), "--servers", str(backups + 2)]
    subprocess.run([*up, "--backups", str(backups), "--base-port", "0"], check=True,
                   capture_output=True)  # fmt: skip
    gaps = []
    try:
        for index in range(runs):
            bench = [*PBKV, "bench", "--cluster-dir", str(directory), "--kill-primary-at", "2"]
            bench += ["--duration", "4", "--clients", "4", "--write-ratio", "0.5", "--json"]
            ran = subprocess.run(bench, check=False, capture_output=True, text=True)
            result = json.loads(ran.stdout)
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
