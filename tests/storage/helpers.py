"""Helpers for the storage tests: open a log, look at its files, break them on purpose."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pbkv.storage import DurableLog, FsyncPolicy, Recovered
from pbkv.storage.format import SEGMENT_HEADER_BYTES, encode_frame


def reopen(
    directory: Path, fsync: FsyncPolicy = "always", **options: Any
) -> tuple[DurableLog, Recovered]:
    return DurableLog.open(directory, fsync, **options)


def recovered_after_close(directory: Path, **options: Any) -> Recovered:
    log, recovered = DurableLog.open(directory, "always", **options)
    log.close()
    return recovered


def write_log(directory: Path, batches: Sequence[Sequence[bytes]], **options: Any) -> None:
    log, _ = DurableLog.open(directory, "always", **options)
    for batch in batches:
        log.append(batch)
    log.close()


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def snapshots(directory: Path) -> list[Path]:
    return sorted(directory.glob("snap-*.snap"))


def frame_offsets(batches: Sequence[Sequence[bytes]]) -> list[int]:
    """Where each batch's frame starts in a segment that holds exactly ``batches``."""
    offsets, offset = [], SEGMENT_HEADER_BYTES
    for batch in batches:
        offsets.append(offset)
        offset += len(encode_frame(batch))
    return offsets


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


@contextmanager
def counting(name: str) -> Iterator[list[int]]:
    """Count calls to ``os.<name>`` (still calling the real one); yields the list of fds."""
    real: Callable[..., Any] = getattr(os, name)
    calls: list[int] = []

    def wrapper(fd: int, *args: Any) -> Any:
        calls.append(fd)
        return real(fd, *args)

    setattr(os, name, wrapper)
    try:
        yield calls
    finally:
        setattr(os, name, real)
