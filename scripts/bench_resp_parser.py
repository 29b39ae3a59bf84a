"""How fast the benchmark's Redis client parses replies: hiredis (C) against our Python parser.

Feeds ``--replies`` pipelined replies (``+OK``, ``:1``, a 64-byte bulk string, as ``SET`` +
``WAIT`` + ``GET`` produce them) to ``RespConnection`` in 64 KiB reads, as a socket would, and
prints replies per second for each parser, best of ``--repeat`` runs. No server, no network.

Usage::

    .venv/bin/python scripts/bench_resp_parser.py [--replies 600000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from pbkv.bench.resp import RespConnection, hiredis

REPLY_GROUP = b"+OK\r\n:1\r\n$64\r\n" + b"x" * 64 + b"\r\n"
READ_BYTES = 65_536


class _Sink:
    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass

    def get_extra_info(self, name: str) -> None:
        return None


async def _one_run(native: bool, groups: int) -> float:
    connection = RespConnection(native)
    connection.connection_made(_Sink())  # type: ignore[arg-type]
    futures = [connection.request(b"", 3) for _ in range(groups)]
    stream = REPLY_GROUP * groups
    started = time.perf_counter()
    for offset in range(0, len(stream), READ_BYTES):
        connection.data_received(stream[offset : offset + READ_BYTES])
    elapsed = time.perf_counter() - started
    assert all(future.done() for future in futures)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=600_000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    groups = max(1, arguments.replies // 3)
    for native in (False, True):
        if native and hiredis is None:
            print("hiredis: not installed (pip install hiredis)")
            continue
        best = min(asyncio.run(_one_run(native, groups)) for _ in range(arguments.repeat))
        name = "hiredis" if native else "python"
        per_second = 3 * groups / best
        print(f"{name:>7}: {per_second / 1e6:.2f} M replies/s ({1e9 / per_second:.0f} ns each)")


if __name__ == "__main__":
    main()
