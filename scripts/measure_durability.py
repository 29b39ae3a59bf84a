"""Durability figures of docs/performance.md (issue #10), each with the command that made it.

    python scripts/measure_durability.py restart --keys 1000000
        A data directory holding KEYS keys (a compaction snapshot plus a log tail of
        --tail-records writes), then `pbkv server --data-dir` started on it: seconds until it
        listens (recovered and serving its port) and its RSS then. Median of --runs.

    python scripts/measure_durability.py catch-up --pause 10
        A durable local cluster: its store filled with --fill seconds of 1 KiB writes over
        --keys keys, then a load of 64-byte writes (`pbkv bench`, 16 clients); the backup is
        frozen (SIGSTOP) for PAUSE seconds, so it is replaced, then resumed and added back. Bytes
        moved, the transfer's duration, and seconds from resume to the primary's
        `catch_up_done` / `state_transfer_done`, with the backlog on (64 MiB) and off
        (--backlog-bytes 0: a full transfer), side by side.

Everything runs on loopback in a temporary directory and is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from pbkv.bench.local_cluster import LocalCluster
from pbkv.cluster.processes import free_port
from pbkv.core.durable import Snapshot, StreamRecord, ViewRecord
from pbkv.core.messages import Put, Request
from pbkv.storage import DurableLog

PBKV = [sys.executable, "-m", "pbkv"]


def build_directory(directory: Path, keys: int, tail_records: int) -> None:
    """A snapshot of ``keys`` keys (as compaction writes it) and ``tail_records`` writes after."""
    log, _ = DurableLog.open(directory, "no")
    data = {f"key-{i:08d}": "v" * 64 for i in range(keys)}
    mark = log.begin_compaction()
    log.finish_compaction(mark, msgspec.msgpack.encode(Snapshot(data, (), keys, 1, 1)))
    encode = msgspec.msgpack.Encoder().encode
    batch = [encode(ViewRecord(1))]
    for index in range(tail_records):
        request = Request("writer", index, index, Put(f"key-{index:08d}", "w" * 64))
        batch.append(encode(StreamRecord(keys + index, 1, request)))
        if len(batch) >= 1000:
            log.append(batch)
            batch = []
    log.append(batch)
    log.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def time_restart(directory: Path) -> tuple[float, float, str]:
    """Seconds until the server listens, its RSS then (MiB), and its recovery line."""
    started = time.monotonic()
    argv = [*PBKV, "server", "--listen", f"127.0.0.1:{free_port()}"]
    argv += ["--viewserver", f"127.0.0.1:{free_port()}", "--data-dir", str(directory)]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    recovered = ""
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "storage_recovered" in line:
                recovered = line.strip()
            if " listening " in line:
                return time.monotonic() - started, rss_mib(process.pid), recovered
        raise RuntimeError(f"server exited: {process.wait()}")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def restart(arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pbkv-restart-") as temporary:
        directory = Path(temporary) / "data"
        started = time.monotonic()
        build_directory(directory, arguments.keys, arguments.tail_records)
        print(f"built {arguments.keys:,} keys in {time.monotonic() - started:.1f} s")
        runs = [time_restart(directory) for _ in range(arguments.runs)]
    seconds = statistics.median(run[0] for run in runs)
    rss = statistics.median(run[1] for run in runs)
    print(f"restart to listening: median {seconds:.2f} s of {[round(r[0], 2) for r in runs]}")
    print(f"RSS after recovery: median {rss:.0f} MiB")
    print(f"recovery line: {runs[-1][2]}")


TRANSFER = re.compile(r"^(\S+) .*?(catch_up_done|state_transfer_done) .*?bytes=(\d+)")
START = re.compile(r"^(\S+) .*?(catch_up_start|state_transfer_start) (.*)$")


def stamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pause_backup(
    cluster: LocalCluster, pause_s: float, load_s: float, keys: int, fill_s: float
) -> str:
    """Fill the store (``fill_s`` seconds of 1 KiB writes over ``keys`` keys), then freeze the
    backup under a load of 64-byte writes and resume it; one line: what moved it back, bytes,
    the transfer's own duration (start to done in the primary's log), seconds from resume."""
    view = cluster.view()
    assert view is not None and view.backup is not None
    backup, primary = cluster.node_at(view.backup), cluster.node_at(view.primary)
    assert backup is not None and primary is not None
    fill_argv = [*PBKV, "bench", "--viewserver", cluster.viewserver, "--clients", "32"]
    fill_argv += ["--keys", str(keys), "--value-size", "1024", "--write-ratio", "1.0"]
    fill_argv += ["--duration", str(fill_s), "--no-progress", "--json"]
    subprocess.run(fill_argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load_argv = [*PBKV, "bench", "--viewserver", cluster.viewserver, "--clients", "16"]
    load_argv += ["--keys", str(keys)]
    load_argv += ["--duration", str(load_s), "--write-ratio", "1.0", "--no-progress", "--json"]
    load = subprocess.Popen(load_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    before = len(primary.log_file.read_text().splitlines())
    os.kill(backup.pid, signal.SIGSTOP)
    time.sleep(pause_s)
    resumed = time.monotonic()
    os.kill(backup.pid, signal.SIGCONT)
    try:
        while time.monotonic() < resumed + 60:
            lines = primary.log_file.read_text().splitlines()[before:]
            starts = [found for found in map(START.search, lines) if found]
            for found in map(TRANSFER.search, lines):
                if found and starts:
                    took = stamp(found.group(1)) - stamp(starts[-1].group(1))
                    return (
                        f"{found.group(2):20} {int(found.group(3)):>11,} bytes in {took:.2f} s "
                        f"({time.monotonic() - resumed:.2f} s after resume); {starts[-1].group(3)}"
                    )
            time.sleep(0.02)
        raise RuntimeError("the backup never came back")
    finally:
        load.wait()


def catch_up(arguments: argparse.Namespace) -> None:
    for backlog in (arguments.backlog_bytes, 0):
        extra = ("--backlog-bytes", str(backlog))
        cluster = LocalCluster(extra_server_args=extra, fsync="always").start()
        try:
            line = pause_backup(
                cluster, arguments.pause, arguments.pause + 6, arguments.keys, arguments.fill
            )
        finally:
            cluster.stop()
        print(f"backlog {backlog:>10,} B, {arguments.keys:,} keys: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    restart_parser = commands.add_parser("restart")
    restart_parser.add_argument("--keys", type=int, default=1_000_000)
    restart_parser.add_argument("--tail-records", type=int, default=100_000)
    restart_parser.add_argument("--runs", type=int, default=3)
    catch_parser = commands.add_parser("catch-up")
    catch_parser.add_argument("--pause", type=float, default=10.0)
    catch_parser.add_argument("--keys", type=int, default=20_000, help="keys the load writes")
    catch_parser.add_argument("--fill", type=float, default=8.0, help="seconds of 1 KiB writes")
    catch_parser.add_argument("--backlog-bytes", type=int, default=64 * 1024 * 1024)
    arguments = parser.parse_args()
    restart(arguments) if arguments.command == "restart" else catch_up(arguments)


if __name__ == "__main__":
    main()
