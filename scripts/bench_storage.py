"""Benchmark the storage engine against SQLite (and LMDB when it is installed) on this machine.

Two measurements, each bounded (the whole run takes under two minutes):

1. ``append``: batches of 1, 16 and 64 records of 100 bytes, each batch made durable as the
   policy says, for ``--seconds`` per case. ``always``: our log fsyncs once per ``append``;
   SQLite in WAL mode with ``synchronous=FULL`` commits one transaction per batch; LMDB commits
   with ``sync=True``. ``everysec``: our log with ``sync_if_due`` after each batch; SQLite with
   ``synchronous=NORMAL`` (no fsync per commit, only at checkpoints); LMDB ``sync=False`` plus
   ``env.sync()`` once a second. ``no``: never fsync (SQLite ``synchronous=OFF``).
   Reports batches/s, records/s and the p50/p99 latency of one batch.
2. ``recovery``: ``--records`` log records (a msgpack ``(op, 16-byte key, 64-byte value)``,
   ~90 bytes) written in appends of ``--batch`` records, closed, then timed: open (read and
   verify), and open + decode + apply to a dict, the way a restarting replica rebuilds its
   store; then a snapshot holding ``--records`` keys (one msgpack-encoded dict) written and
   read back the same way. SQLite holds the log as a table of blobs and the snapshot as a
   key/value table; LMDB the same as two databases.

Also: the cost of the checksum (zlib.crc32 against crc32c when that package is installed).

Usage::

    .venv/bin/python scripts/bench_storage.py                        # everything, < 2 minutes
    .venv/bin/python scripts/bench_storage.py --only append --seconds 1
    .venv/bin/python scripts/bench_storage.py --only recovery --records 1000000

LMDB and crc32c are optional: ``.venv/bin/pip install lmdb crc32c`` to include them. They are
not dependencies of pbkv.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sqlite3
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from pbkv.storage import DurableLog, FsyncPolicy

POLICIES: tuple[FsyncPolicy, ...] = ("always", "everysec", "no")
SQLITE_SYNCHRONOUS = {"always": "FULL", "everysec": "NORMAL", "no": "OFF"}
BATCH_SIZES = (1, 16, 64)
RECORD_BYTES = 100
VALUE_BYTES = 64
LMDB_MAP_BYTES = 8 * 1024**3


def optional(name: str) -> Any:
    """A module that may not be installed (None then)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


class Engine(Protocol):
    def append(self, batch: list[bytes]) -> None: ...
    def tick(self, now_s: float) -> None: ...
    def close(self) -> None: ...


class OurLog:
    name = "pbkv log"

    def __init__(self, directory: Path, policy: FsyncPolicy) -> None:
        self.log, _ = DurableLog.open(directory, policy)

    def append(self, batch: list[bytes]) -> None:
        self.log.append(batch)

    def tick(self, now_s: float) -> None:
        self.log.sync_if_due(now_s)

    def close(self) -> None:
        self.log.close()


class SqliteLog:
    name = "sqlite WAL"

    def __init__(self, directory: Path, policy: FsyncPolicy) -> None:
        self.db = sqlite3.connect(directory / "log.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS[policy]}")
        self.db.execute("CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, data BLOB)")

    def append(self, batch: list[bytes]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO log (data) VALUES (?)", [(item,) for item in batch])
        self.db.execute("COMMIT")

    def tick(self, now_s: float) -> None:
        pass

    def close(self) -> None:
        self.db.close()


class LmdbLog:
    name = "lmdb"

    def __init__(self, directory: Path, policy: FsyncPolicy) -> None:
        lmdb = optional("lmdb")
        self.env = lmdb.open(str(directory), map_size=LMDB_MAP_BYTES, sync=policy == "always")
        self.policy = policy
        self.next_key = 0
        self.last_sync_s = 0.0

    def append(self, batch: list[bytes]) -> None:
        with self.env.begin(write=True) as txn:
            for item in batch:
                txn.put(self.next_key.to_bytes(8, "big"), item, append=True)
                self.next_key += 1

    def tick(self, now_s: float) -> None:
        if self.policy == "everysec" and now_s - self.last_sync_s >= 1.0:
            self.env.sync(True)
            self.last_sync_s = now_s

    def close(self) -> None:
        self.env.close()


def engines() -> list[Callable[[Path, FsyncPolicy], Engine]]:
    found: list[Callable[[Path, FsyncPolicy], Engine]] = [OurLog, SqliteLog]
    if optional("lmdb") is not None:
        found.append(LmdbLog)
    return found


def append_case(
    factory: Callable[[Path, FsyncPolicy], Engine],
    policy: FsyncPolicy,
    batch_size: int,
    seconds: float,
    scratch: Path,
) -> list[str]:
    """One row: appends of ``batch_size`` records for ``seconds``."""
    directory = Path(tempfile.mkdtemp(dir=scratch))
    engine = factory(directory, policy)
    batch = [bytes([65 + index % 26]) * RECORD_BYTES for index in range(batch_size)]
    latencies: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds and len(latencies) < 200_000:
        before = time.perf_counter()
        engine.append(batch)
        engine.tick(time.monotonic())
        latencies.append(time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    engine.close()
    shutil.rmtree(directory)
    quantiles = statistics.quantiles(latencies, n=100)
    return [
        getattr(factory, "name", "?"), policy, str(batch_size),
        f"{len(latencies) / elapsed:,.0f}", f"{len(latencies) * batch_size / elapsed:,.0f}",
        f"{quantiles[49] * 1000:.3f}", f"{quantiles[98] * 1000:.3f}",
    ]  # fmt: skip


def bench_append(seconds: float, scratch: Path) -> None:
    header = ["engine", "policy", "batch", "batches/s", "records/s", "p50 ms", "p99 ms"]
    rows = []
    for policy in POLICIES:
        for batch_size in BATCH_SIZES:
            for factory in engines():
                rows.append(append_case(factory, policy, batch_size, seconds, scratch))
    print_table(header, rows)


def log_records(count: int) -> list[bytes]:
    encoder = msgspec.msgpack.Encoder()
    value = b"v" * VALUE_BYTES
    return [encoder.encode(("put", f"key-{index:012d}", value)) for index in range(count)]


def apply_records(records: list[bytes]) -> dict[str, bytes]:
    decoder = msgspec.msgpack.Decoder(tuple[str, str, bytes])
    state: dict[str, bytes] = {}
    for record in records:
        _, key, value = decoder.decode(record)
        state[key] = value
    return state


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def recover_ours(directory: Path) -> list[bytes]:
    log, recovered = DurableLog.open(directory, "no")
    log.close()
    return recovered.records


def recover_sqlite(directory: Path) -> list[bytes]:
    db = sqlite3.connect(directory / "log.sqlite")
    rows = [row[0] for row in db.execute("SELECT data FROM log ORDER BY id")]
    db.close()
    return rows


def recover_lmdb(directory: Path) -> list[bytes]:
    env = optional("lmdb").open(str(directory), map_size=LMDB_MAP_BYTES, readonly=True)
    with env.begin() as txn:
        rows = [bytes(value) for _, value in txn.cursor()]
    env.close()
    return rows


def log_recovery_row(
    name: str,
    factory: Callable[[Path, FsyncPolicy], Engine],
    recover: Callable[[Path], list[bytes]],
    records: list[bytes],
    batch: int,
    scratch: Path,
) -> list[str]:
    """Write ``records`` with ``factory`` in batches (no fsync but at close), then time reading
    them back."""
    directory = Path(tempfile.mkdtemp(dir=scratch))
    engine = factory(directory, "no")
    for start in range(0, len(records), batch):
        engine.append(records[start : start + batch])
    engine.close()
    read_s, found = timed(lambda: recover(directory))
    apply_s, state = timed(lambda: apply_records(found))
    assert len(found) == len(state) == len(records)
    size = disk_mib(directory)
    shutil.rmtree(directory)
    return [name, f"log of {len(records):,} records in batches of {batch}", size, f"{read_s:.2f}",
            f"{read_s + apply_s:.2f}"]  # fmt: skip


def bench_log_recovery(records: list[bytes], batch: int, scratch: Path) -> list[list[str]]:
    writers: list[tuple[str, Callable[[Path, FsyncPolicy], Engine], Callable[[Path], Any]]] = [
        ("pbkv log", OurLog, recover_ours),
        ("sqlite WAL", SqliteLog, recover_sqlite),
    ]
    if optional("lmdb") is not None:
        writers.append(("lmdb", LmdbLog, recover_lmdb))
    return [log_recovery_row(*writer, records, batch, scratch) for writer in writers]


def disk_mib(directory: Path) -> str:
    total = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
    return f"{total / 2**20:.0f}"


def snapshot_ours(state: dict[str, bytes], directory: Path) -> tuple[float, float]:
    log, _ = DurableLog.open(directory, "always")
    log.install_snapshot(msgspec.msgpack.encode(state))
    log.close()
    read_s, recovered = timed(lambda: DurableLog.open(directory, "always"))
    recovered[0].close()
    decode_s, _ = timed(lambda: msgspec.msgpack.decode(recovered[1].snapshot))
    return read_s, read_s + decode_s


def snapshot_sqlite(state: dict[str, bytes], directory: Path) -> tuple[float, float]:
    db = sqlite3.connect(directory / "kv.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID")
    with db:
        db.executemany("INSERT INTO kv VALUES (?, ?)", state.items())
    db.close()

    def load() -> dict[str, bytes]:
        connection = sqlite3.connect(directory / "kv.sqlite")
        loaded = dict(connection.execute("SELECT key, value FROM kv"))
        connection.close()
        return loaded

    load_s, _ = timed(load)
    return load_s, load_s


def snapshot_lmdb(state: dict[str, bytes], directory: Path) -> tuple[float, float]:
    lmdb = optional("lmdb")
    env = lmdb.open(str(directory), map_size=LMDB_MAP_BYTES)
    with env.begin(write=True) as txn:
        for key, value in sorted(state.items()):
            txn.put(key.encode(), value, append=True)
    env.close()

    def load() -> dict[str, bytes]:
        reader = lmdb.open(str(directory), map_size=LMDB_MAP_BYTES, readonly=True)
        with reader.begin() as txn:
            loaded = {bytes(key).decode(): bytes(value) for key, value in txn.cursor()}
        reader.close()
        return loaded

    load_s, _ = timed(load)
    return load_s, load_s


def bench_snapshot_recovery(count: int, scratch: Path) -> list[list[str]]:
    value = b"v" * VALUE_BYTES
    state = {f"key-{index:012d}": value for index in range(count)}
    runs: list[tuple[str, Callable[[dict[str, bytes], Path], tuple[float, float]]]] = [
        ("pbkv log", snapshot_ours),
        ("sqlite WAL", snapshot_sqlite),
    ]
    if optional("lmdb") is not None:
        runs.append(("lmdb", snapshot_lmdb))
    rows = []
    for name, run in runs:
        directory = Path(tempfile.mkdtemp(dir=scratch))
        read_s, total_s = run(state, directory)
        rows.append([name, f"snapshot of {count:,} keys", disk_mib(directory),
                     f"{read_s:.2f}", f"{total_s:.2f}"])  # fmt: skip
        shutil.rmtree(directory)
    return rows


def bench_recovery(count: int, batch: int, scratch: Path) -> None:
    rows = bench_log_recovery(log_records(count), batch, scratch)
    rows += bench_snapshot_recovery(count, scratch)
    header = ["engine", "what", "MiB on disk", "read s", "read + into a dict s"]
    print_table(header, rows)


def bench_checksum() -> None:
    small, big = b"x" * RECORD_BYTES, b"x" * (64 * 2**20)
    functions: list[tuple[str, Callable[[bytes], int]]] = [("zlib.crc32", zlib.crc32)]
    crc32c = optional("crc32c")
    if crc32c is not None:
        functions.append(("crc32c.crc32c", crc32c.crc32c))
    rows = []
    for name, function in functions:
        small_s, _ = timed(lambda: [function(small) for _ in range(1_000_000)])  # noqa: B023
        big_s, _ = timed(lambda: function(big))  # noqa: B023
        rows.append([name, f"{small_s * 1000:.0f}", f"{len(big) / big_s / 1e9:.2f}"])
    print_table(["checksum", "ns per 100-byte record", "GB/s on 64 MiB"], rows)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["append", "recovery", "checksum"])
    parser.add_argument("--seconds", type=float, default=0.5, help="per append case")
    parser.add_argument("--records", type=int, default=1_000_000, help="for recovery")
    parser.add_argument("--batch", type=int, default=16, help="records per append, recovery")
    parser.add_argument("--scratch", type=Path, default=None, help="directory for the data")
    arguments = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=arguments.scratch))
    try:
        if arguments.only in (None, "checksum"):
            bench_checksum()
        if arguments.only in (None, "append"):
            bench_append(arguments.seconds, scratch)
        if arguments.only in (None, "recovery"):
            bench_recovery(arguments.records, arguments.batch, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
