"""Helpers for the storage tests: open a log, look at its files, break them on purpose."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pbkv.storage import DurableLog, FsyncPolicy, Recovered
from pbkv.storage.format import (
    CRC,
    SEGMENT_HEADER,
    SEGMENT_HEADER_BYTES,
    SNAPSHOT_HEADER,
    encode_frame,
)


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


def as_newer_release(path: Path, magic: bytes) -> None:
    """Rewrite the header of a segment or snapshot as a release of another format version would
    write it in this layout: its ``magic``, and a header checksum that holds."""
    covered = SNAPSHOT_HEADER.size if path.name.startswith("snap-") else SEGMENT_HEADER.size
    data = bytearray(path.read_bytes())
    data[:8] = magic
    data[covered : covered + 4] = CRC.pack(zlib.crc32(bytes(data[:covered])))
    path.write_bytes(bytes(data))


def contents(directory: Path) -> dict[str, bytes]:
    """Every file of ``directory`` by name, with its bytes (but ``LOCK``, the opener's)."""
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.name != "LOCK"}


def inode(path: Path) -> int:
    return path.stat().st_ino


@contextmanager
def recording() -> Iterator[list[tuple[str, int | str]]]:
    """Record, in order, the calls durability rests on, each still calling the real one:
    ``fsync``, ``fdatasync`` and ``ftruncate`` with the inode of what they act on (a file or a
    directory), ``replace`` and ``unlink`` with the name of the file they make or remove."""
    events: list[tuple[str, int | str]] = []
    reals: dict[str, Callable[..., Any]] = {
        name: getattr(os, name) for name in ("fsync", "fdatasync", "ftruncate", "replace", "unlink")
    }

    def on_fd(name: str) -> Callable[..., Any]:
        def wrapper(fd: int, *args: Any) -> Any:
            events.append((name, os.fstat(fd).st_ino))
            return reals[name](fd, *args)

        return wrapper

    def on_path(name: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            events.append((name, Path(args[-1]).name))
            return reals[name](*args, **kwargs)

        return wrapper

    for name in reals:
        setattr(os, name, on_path(name) if name in ("replace", "unlink") else on_fd(name))
    try:
        yield events
    finally:
        for name, real in reals.items():
            setattr(os, name, real)


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
