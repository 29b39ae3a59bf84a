"""File-system primitives of the storage engine, each turning an ``OSError`` into one line.

Durability on POSIX needs more than ``write``: data reaches the disk on ``fdatasync``/``fsync``,
and a new or renamed file's *name* reaches it only when its directory is fsynced. So:

- ``write_all`` loops over short writes (a full disk writes part, then fails);
- ``sync_data`` is ``fdatasync``: enough for appended data (the file size is synced with it);
- ``atomic_write`` is write temp, fsync, rename, fsync the directory: after a crash the target
  holds either the old content or the new, never a mix;
- ``DirectoryLock`` is ``flock(LOCK_EX | LOCK_NB)`` on ``<dir>/LOCK``: a second opener, in
  this process or another, is refused at once. The kernel drops the lock when the process dies,
  so a crash never leaves a stale lock behind.

Every function is a thin wrapper, so tests can count or break the underlying ``os`` calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

from pbkv.storage.errors import StorageError, StorageLocked, os_error

LOCK_FILE: Final = "LOCK"
TEMP_SUFFIX: Final = ".tmp"


def write_all(fd: int, data: bytes | memoryview, path: Path) -> None:
    """Write every byte of ``data`` at the file's current position (or end, with O_APPEND)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as error:
            raise os_error("write to", path, error) from None
        if written <= 0:
            raise StorageError(f"cannot write to {path}: the write made no progress")
        view = view[written:]


def sync_data(fd: int, path: Path) -> None:
    try:
        os.fdatasync(fd)
    except OSError as error:
        raise os_error("fsync", path, error) from None


def sync_directory(directory: Path) -> None:
    """Make created, renamed and deleted names in ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise os_error("open directory", directory, error) from None
    try:
        os.fsync(fd)
    except OSError as error:
        raise os_error("fsync directory", directory, error) from None
    finally:
        os.close(fd)


def atomic_write(path: Path, *chunks: bytes) -> None:
    """Replace ``path`` with ``chunks`` durably: temp file, fsync, rename, fsync directory."""
    temporary = path.with_name(path.name + TEMP_SUFFIX)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as error:
        raise os_error("create", temporary, error) from None
    try:
        for chunk in chunks:
            write_all(fd, chunk, temporary)
        try:
            os.fsync(fd)
        except OSError as error:
            raise os_error("fsync", temporary, error) from None
    except StorageError:
        os.close(fd)
        remove_quietly(temporary)
        raise
    os.close(fd)
    try:
        os.replace(temporary, path)
    except OSError as error:
        remove_quietly(temporary)
        raise os_error("rename to", path, error) from None
    sync_directory(path.parent)


def open_append(path: Path) -> int:
    """An O_APPEND descriptor of an existing file."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as error:
        raise os_error("open", path, error) from None


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes and make that durable."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as error:
        raise os_error("open", path, error) from None
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as error:
        raise os_error("truncate", path, error) from None
    finally:
        os.close(fd)


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise os_error("read", path, error) from None


def read_head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of ``path`` (fewer if it is shorter)."""
    try:
        with path.open("rb") as file:
            return file.read(size)
    except OSError as error:
        raise os_error("read", path, error) from None


def remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        raise os_error("delete", path, error) from None


def remove_quietly(path: Path) -> None:
    """Best effort clean-up on a path that is already failing: the first error is the story."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
    except OSError as error:
        raise os_error("stat", path, error) from None


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/LOCK``, held until ``release``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise os_error("use data directory", directory, error) from None
        try:
            self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a LOCK that is a directory, or unreadable: name it
            raise os_error("open the lock file", self.path, error) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StorageLocked(
                f"data directory {directory} is in use by another process (lock {self.path})"
            ) from None
        except OSError as error:
            os.close(self.fd)
            raise os_error("lock", self.path, error) from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
