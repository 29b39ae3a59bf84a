"""Errors of the storage engine: every one carries a single line that names the file.

``StorageError`` is the disk failing us (EIO, ENOSPC, EROFS, permissions) or a data directory
that another process holds (``StorageLocked``). ``StorageCorrupt`` is data on disk that fails
its checks in a place where a crash cannot have put it: the message names the file and the byte
offset and says that ``repair`` would truncate there. ``StorageFormatVersion`` is not damage: a
file of another format version of pbkv, which nothing here reads, cuts, moves or deletes. Misuse
of the API (a stale compaction mark, a closed log) raises ``ValueError`` like any other
programming error.
"""

from __future__ import annotations

import errno
from pathlib import Path

from pbkv.errors import PbkvError, written_by_another_version
from pbkv.storage.format import FORMAT_VERSION


class StorageError(PbkvError):
    """The disk failed an operation; the message is one line naming the file."""


class StorageLocked(StorageError):
    """Another process (or another open log in this one) holds the data directory."""


class StorageCorrupt(StorageError):
    """Damage on disk that is not a torn tail: refusing to guess what was lost.

    Attributes:
        path: the damaged (or missing) file.
        offset: the byte offset of the first damage in it (0 for a missing or bad file).
    """

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"corrupt {describe(path)} {path} at offset {offset}: {reason} "
            "(use --repair to truncate there and lose what follows)"
        )


class StorageFormatVersion(StorageError):
    """A segment or snapshot written by another format version of pbkv (a newer release, before
    a downgrade): not damage, so recovery refuses before it changes anything in the directory,
    and ``repair`` too (docs/design.md, recovery rule 6).

    Attributes:
        path: the file.
        version: the version its magic names (an ASCII letter or digit: ``"2"``).
    """

    def __init__(self, path: Path, version: str) -> None:
        self.path = path
        self.version = version
        super().__init__(
            f"{describe(path)} {path} was {written_by_another_version(version, FORMAT_VERSION)}: "
            "start the release that wrote it (--repair leaves such files as they are)"
        )


def describe(path: Path) -> str:
    """``log`` or ``snapshot``, from the file's name."""
    return "snapshot" if path.name.startswith("snap-") else "log"


def os_error(action: str, path: Path, error: OSError) -> StorageError:
    """One line for a failed system call: ``cannot write to /d/wal-1.log: ... (ENOSPC)``."""
    code = errno.errorcode.get(error.errno or 0, "unknown")
    reason = error.strerror or str(error)
    return StorageError(f"cannot {action} {path}: {reason} ({code})")
